"""examples/poller.py, run as a user would: a subprocess per core, for about two seconds.

The example starts its own quote server on loopback, polls it into a bounded
Buffer, runs the program under supervise with a coalesced screen that fails
now and then, and posts alerts that the server refuses now and then. Its
summary lines are checked here against each other: every quote put was
applied once (nothing lost, though ticks failed and were restarted), the model
holds the last price polled for every symbol, the alerts add up with what the
server saw, and the metrics count one error and one rollback per screen
failure. No timing is asserted: how many polls fit in the time varies.
"""

from __future__ import annotations

import re
from pathlib import Path
from types import ModuleType

import pytest
from _helpers import load_example as load_example_at
from _helpers import run_example

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "poller.py"
CORES = [pytest.param("compiled", marks=pytest.mark.compiled), "pure"]


def example(core: str, *args: str) -> list[str]:
    """Run the example with ``core`` live; returns its output lines after the banner."""
    return run_example(EXAMPLE, core, *args)


def summary(lines: list[str], prefix: str) -> dict[str, int]:
    """The numbers of the summary line starting with ``prefix``, by the words before them."""
    (line,) = [line for line in lines if line.startswith(prefix)]
    return {
        name.strip(): int(value)
        for name, value in re.findall(r"([a-z][a-z ]*?):? (-?\d+)\b", line[len(prefix) :])
    }


def check_summary(lines: list[str], *, coalesced: bool) -> None:
    assert lines[-1] == "check: OK"
    polls = summary(lines, "polls:")
    assert polls["quotes put"] > 0
    assert polls["quotes applied"] == polls["quotes put"]
    assert polls["lost"] == 0
    assert any(
        line.startswith("model: ") and line.endswith("last price polled: yes") for line in lines
    )

    alerts = summary(lines, "alerts:")
    assert alerts["sent"] + alerts["failed"] == alerts["requested"]
    assert alerts["server accepted"] == alerts["sent"]
    assert alerts["refused"] == alerts["failed"]

    screen = summary(lines, "screen:")
    metrics = summary(lines, "metrics:")
    # Each screen failure failed one tick that had read a message: one error, one
    # rollback, one restart (logged by supervise among the reports).
    assert metrics["errors"] == metrics["rollbacks"] == screen["failed"]
    restarts = [line for line in lines if "elmstate.supervise: tick failed" in line]
    assert len(restarts) == screen["failed"]
    assert metrics["depth"] == metrics["lag"] == 0
    if coalesced:
        assert "(coalesced)" in lines[-3]
        assert screen["drawn"] < polls["quotes put"]  # once per burst, not per quote


@pytest.mark.parametrize("core", CORES)
def test_poller(core: str) -> None:
    lines = example(core, "--seconds", "2", "--report", "0.5")
    check_summary(lines, coalesced=True)
    # The defaults fail a draw now and then, and refuse some alerts: both paths ran.
    assert summary(lines, "screen:")["failed"] > 0
    assert any(line.startswith("  [") for line in lines)  # the reporter read Latest


@pytest.mark.parametrize("core", CORES)
def test_poller_drawing_every_tick(core: str) -> None:
    # The screen on every tick cannot keep up: the bounded buffer holds the poller
    # back, and still nothing is lost.
    lines = example(
        core,
        "--every-tick",
        "--seconds",
        "1",
        "--symbols",
        "20",
        "--maxsize",
        "50",
        "--view-ms",
        "1",
    )
    check_summary(lines, coalesced=False)
    assert "(every tick)" in lines[-3]


def load_example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_example_at(EXAMPLE, "poller_example", monkeypatch)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--symbols", "0"], "--symbols must be >= 1"),
        (["--maxsize", "0"], "--maxsize must be >= 1"),
        (["--seconds", "0"], "must be > 0"),
        (["--glitch-every", "1"], "--glitch-every must be 0 (never) or >= 2"),
        (["--view-ms", "-1"], "--view-ms must be >= 0"),
    ],
)
def test_main_rejects_bad_arguments(
    argv: list[str],
    error: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    poller = load_example(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        poller.main(argv)
    assert exit_info.value.code == 2
    assert error in capsys.readouterr().err

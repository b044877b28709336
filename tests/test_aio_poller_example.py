"""examples/aio_poller.py, run as a user would: a subprocess per core and event loop.

The example starts its own quote server on loopback (asyncio streams), loads
the opening prices with ``aio.batch`` and an async fetcher, follows the
server's price feed with ``aio.run`` whose commands are async entries (polls
and alerts), draws a throttled screen, and stops the run by cancelling its
``ctx`` once the feed has closed. Its summary lines are checked here against
each other and against the arguments: every page and tick was applied once,
the polls and alerts add up with what the server saw, the screen's draws are
the lines printed, and the stop took milliseconds. It runs on asyncio's own
event loop and on uvloop's. No timing is asserted but the stop's: how many
polls and draws fit in the time varies.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path
from types import ModuleType

import pytest
from _helpers import load_example as load_example_at
from _helpers import run_example

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "aio_poller.py"
CORES = [pytest.param("compiled", marks=pytest.mark.compiled), "pure"]
LOOPS = ["asyncio", "uvloop"]

# Small enough for about a second a run: 5 pages (4 of 7 and one of 2), then a
# feed of 200 ticks every 4 ms.
ARGS = ("--symbols", "30", "--page-size", "7", "--ticks", "200", "--view-every", "0.1")
PAGES, SYMBOLS, TICKS = 5, 30, 200


def example(core: str, loop: str, *args: str) -> list[str]:
    """Run the example with ``core`` on ``loop``; returns its output lines after the banner."""
    if loop == "uvloop":
        if sys.platform == "win32":
            pytest.skip("uvloop does not run on Windows")
        try:
            import uvloop  # noqa: F401
        except ImportError:
            pytest.fail("uvloop is not installed (pip install -e '.[test]')")
        args = ("--uvloop", *args)
    return run_example(EXAMPLE, core, *args)


def line(lines: list[str], prefix: str) -> str:
    """The one output line starting with ``prefix``."""
    (found,) = [text for text in lines if text.startswith(prefix)]
    return found


def summary(lines: list[str], prefix: str) -> dict[str, float]:
    """The numbers of the summary line starting with ``prefix``, by the words before them."""
    text = line(lines, prefix)[len(prefix) :]
    return {
        name.strip(): float(value)
        for name, value in re.findall(r"([a-z][a-z ]*?):? (-?\d+(?:\.\d+)?)\b", text)
    }


@pytest.mark.parametrize("loop", LOOPS)
@pytest.mark.parametrize("core", CORES)
def test_aio_poller(core: str, loop: str) -> None:
    lines = example(core, loop, *ARGS)
    assert lines[-1] == "check: OK"
    assert lines[0].startswith("event loop: ")
    assert ("uvloop" in lines[0]) == (loop == "uvloop")

    batch = summary(lines, "batch:")
    assert batch["pages fetched"] == batch["served"] == PAGES
    assert batch["quotes applied"] == SYMBOLS
    assert line(lines, "batch:").endswith("the book matches the server's: yes")

    live = summary(lines, "live:")
    assert live["polls"] == live["served"] > 1  # the feed took more than one poll
    assert live["ticks applied"] == live["of"] == live["last seq"] == TICKS
    assert line(lines, "live:").endswith("each symbol at the server's last price: yes")

    alerts = summary(lines, "alerts:")
    assert alerts["requested"] > 0  # some async entries were alerts, beside the polls
    assert alerts["sent"] + alerts["failed"] == alerts["requested"]
    assert alerts["server accepted"] == alerts["sent"]
    assert alerts["refused"] == alerts["failed"] > 0  # refusals came back as messages

    # The throttled screen: one line per draw; the last one shows the final model.
    screen = summary(lines, "screen:")
    draws = [text for text in lines if text.startswith("  [")]
    assert screen["drawn"] == len(draws) >= 2
    assert draws[-1].endswith(
        f"ticks {TICKS} in {int(live['polls'])} polls, "
        f"alerts sent {int(alerts['sent'])} failed {int(alerts['failed'])}"
    )
    assert line(lines, "screen:").endswith("the last draw shows the final model: yes")

    # ctx.cancel() ends the waiting run within milliseconds (generous for a busy CI).
    stop = line(lines, "stop:")
    match = re.fullmatch(r"stop: ctx\.cancel\(\) ended aio\.run with Canceled in ([\d.]+) ms", stop)
    assert match is not None, stop
    assert float(match[1]) < 100


@pytest.mark.parametrize("core", CORES)
def test_aio_poller_gives_up_at_its_timeout(core: str) -> None:
    # A feed longer than the timeout: the run ends with DeadlineExceeded, its
    # commands in flight are cancelled, and the self-check reports the failure.
    lines = run_example(EXAMPLE, core, "--ticks", "5000", "--timeout", "0.5", returncode=1)
    assert lines[-1] == "failed: the feed was not followed to its end within 0.5 s"


def load_example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_example_at(EXAMPLE, "aio_poller_example", monkeypatch)


@pytest.mark.parametrize(
    ("argv", "error"),
    [
        (["--symbols", "0"], "--symbols must be >= 1"),
        (["--page-size", "0"], "--page-size must be >= 1"),
        (["--ticks", "0"], "--ticks must be >= 1"),
        (["--fail-every", "0"], "--fail-every must be >= 1"),
        (["--tick-ms", "0"], "must be > 0"),
        (["--interval", "-1"], "must be > 0"),
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

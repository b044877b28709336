"""examples/counters.py, run as a user would: a subprocess per core and mode.

The example imports the installed ``elmstate``; the pure leg selects its core
through ``ELMSTATE_NO_EXTENSIONS=1``, the compiled leg clears that variable and
requires the example to report the compiled core. As in conftest, the compiled
leg is skipped only when ``ELMSTATE_NO_EXTENSIONS`` is set for the test run.
"""

from __future__ import annotations

from pathlib import Path
from types import ModuleType

import pytest
from _helpers import load_example as load_example_at
from _helpers import run_example

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "counters.py"
CORES = [pytest.param("compiled", marks=pytest.mark.compiled), "pure"]


def example(core: str, *args: str, cwd: Path) -> list[str]:
    """Run the example with ``core`` live; returns its output lines after the banner."""
    return run_example(EXAMPLE, core, *args, cwd=cwd)


def figures(count: int, before: tuple[int, int] = (0, 0)) -> str:
    """The example's summary of ``count`` clicks (two left, one right) after ``before``."""
    right = before[1] + count // 3
    left = before[0] + count - count // 3
    return f"left={left} ({left // 10} milestones), right={right} ({right // 10} milestones)"


def milestones(count: int) -> list[str]:
    right = count // 3
    left = count - right
    return sorted(
        [f"  milestone: left passed {n}" for n in range(10, left + 1, 10)]
        + [f"  milestone: right passed {n}" for n in range(10, right + 1, 10)]
    )


def printed_milestones(lines: list[str]) -> list[str]:
    return sorted(line for line in lines if line.startswith("  milestone: "))


@pytest.mark.parametrize("count", [0, 60, 301])
@pytest.mark.parametrize("core", CORES)
def test_run(core: str, count: int, tmp_path: Path) -> None:
    lines = example(core, "run", "--count", str(count), cwd=tmp_path)
    assert lines[-2:] == [
        "run stopped by Canceled: context canceled",
        f"run final: {figures(count)}",
    ]
    assert printed_milestones(lines) == milestones(count)


@pytest.mark.parametrize("count", [0, 60, 301])
@pytest.mark.parametrize("core", CORES)
def test_batch(core: str, count: int, tmp_path: Path) -> None:
    lines = example(core, "batch", "--count", str(count), cwd=tmp_path)
    assert lines[-1] == f"batch final: {figures(count)}"
    assert printed_milestones(lines) == milestones(count)


@pytest.mark.parametrize("core", CORES)
def test_aggregate_resumes_from_its_snapshot(core: str, tmp_path: Path) -> None:
    db = str(tmp_path / "snapshots.sqlite3")
    first = example(core, "aggregate", "--db", db, "--count", "60", cwd=tmp_path)
    assert "aggregate loaded: nothing, starting from init" in first
    assert first[-1] == f"aggregate stored: {figures(60)}"
    assert first[-1] == "aggregate stored: left=40 (4 milestones), right=20 (2 milestones)"

    second = example(core, "aggregate", "--db", db, "--count", "60", cwd=tmp_path)
    assert f"aggregate loaded: {figures(60)}" in second
    assert second[-1] == "aggregate stored: left=80 (8 milestones), right=40 (4 milestones)"
    # Milestones continue from the snapshot: 50..80 on the left, 30..40 on the right.
    assert printed_milestones(second) == sorted(
        [f"  milestone: left passed {n}" for n in (50, 60, 70, 80)]
        + [f"  milestone: right passed {n}" for n in (30, 40)]
    )


@pytest.mark.parametrize("core", CORES)
def test_demo_runs_all_three_modes(core: str, tmp_path: Path) -> None:
    lines = example(core, cwd=tmp_path)  # no mode, default db in the working directory
    assert [line.split(":")[0] for line in lines if line.startswith("==")] == [
        "== run",
        "== batch",
        "== aggregate",
    ]
    assert f"run final: {figures(60)}" in lines
    assert f"batch final: {figures(60)}" in lines
    assert lines[-1] == f"aggregate stored: {figures(60)}"
    assert (tmp_path / "elmstate-demo.sqlite3").exists()


def load_example(monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    return load_example_at(EXAMPLE, "counters_example", monkeypatch)


def test_main_in_process(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    counters = load_example(monkeypatch)
    assert counters.main(["batch", "--count", "30"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[-1] == f"batch final: {figures(30)}"


def test_main_rejects_a_negative_count(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    counters = load_example(monkeypatch)
    with pytest.raises(SystemExit) as exit_info:
        counters.main(["batch", "--count", "-1"])
    assert exit_info.value.code == 2
    assert "--count must be >= 0" in capsys.readouterr().err

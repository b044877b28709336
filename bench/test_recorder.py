"""A smoke run of recorder.py at a token size, so that it cannot rot (no timing is asserted).

The script checks every arm's final model and replays each recorded trace."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

_spec = importlib.util.spec_from_file_location(
    "elmstate_bench_recorder", Path(__file__).resolve().parent / "recorder.py"
)
assert _spec is not None and _spec.loader is not None
trace_bench = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(trace_bench)


def test_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert trace_bench.main(["--messages", "300", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    assert "300 messages, median of 1 rounds" in out[0]
    rows = [line.split() for line in out[2:]]
    assert [row[:2] for row in rows] == [
        [mode, arm] for mode in ("run", "batch") for arm in ("bare", "forwarding", "recorded")
    ]
    assert all(float(row[2]) > 0 for row in rows)

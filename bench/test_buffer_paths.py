"""A smoke run of buffer_paths.py at a token size, so that it cannot rot (no timing is asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import buffer_paths  # noqa: E402


def test_smoke(capsys: pytest.CaptureFixture[str]) -> None:
    assert buffer_paths.main(["-n", "2000", "--rounds", "1"]) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line.split(" | ")[0].lstrip("| ") for line in out if line.startswith("| ")][1:]
    assert rows == [
        "hand-written loop (floor), per message",
        "Buffer put(ctx), no values",
        "Buffer get(), message held",
        "Buffer put(ctx, value)",
        "run, None command",
        "bounded Buffer get(), message held",
        "run, None command, bounded Buffer",
    ]

"""A smoke run of backpressure.py at a token size, so that it cannot rot (no timing is asserted)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backpressure  # noqa: E402


@pytest.mark.parametrize("pure", [False, True], ids=["compiled", "pure"])
def test_smoke(capsys: pytest.CaptureFixture[str], pure: bool) -> None:
    argv = ["-n", "300000", "--maxsize", "100"] + (["--pure"] if pure else [])
    assert backpressure.main(argv) == 0
    rows = [line for line in capsys.readouterr().out.splitlines() if line.startswith("| Buffer")]
    assert [row.split(" | ")[0] for row in rows] == ["| Buffer()", "| Buffer(maxsize=100)"]
    # the bounded buffer never held much more than its maxsize (the loop's own puts aside)
    assert int(rows[1].rsplit("|", 2)[1].strip().replace(",", "")) <= 101

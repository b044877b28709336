"""Smoke runs of compare.py's asyncio rows, aggregates.py's aio arms and callgrind.py's
aio.run cases at token sizes, so that they cannot rot (no timing is asserted).

compare.py checks every contender's last model each round and every aggregate
arm's stored counts; callgrind.py's child checks the last model its loop saw.
"""

from __future__ import annotations

import importlib.util
import os
import statistics
import subprocess
import sys
from pathlib import Path

import aggregates
import aio_cores
import compare
import pytest

HERE = Path(__file__).resolve().parent


def rows(out: str) -> list[list[str]]:
    """The cells of every Markdown table row printed, header rows left out."""
    lines = [line for line in out.splitlines() if line.startswith("| ")]
    cells = [[c.strip() for c in line.strip("|").split("|")] for line in lines]
    return [c for c in cells if c[0] not in ("contender", "store") and not c[0].startswith("--")]


def test_aio_rows(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["-n", "3000", "--pure-n", "1000", "--keys", "60", "--rounds", "2", "--no-chart"]
    for text in ("aio.run", "asyncio.Queue", "MemoryStore"):
        argv += ["--only", text]
    assert compare.main(argv) == 0
    got = rows(capsys.readouterr().out)
    expected = ["hand-written loop (floor)"]
    if aio_cores.compiled_aio() is not None:
        expected += ["elmstate aio.run, compiled", "elmstate aio.run, () command, compiled"]
        if importlib.util.find_spec("uvloop") is not None:
            expected.append("elmstate aio.run, uvloop, compiled")
    expected += [
        "elmstate aio.run, pure",
        "elmstate aggregate inline, MemoryStore (60 keys x 10 msgs)",
        "asyncio.Queue loop",
    ]
    contenders = [r for r in got if len(r) == 9]
    assert [r[0] for r in contenders] == expected
    targets = {r[0]: r[7] for r in contenders}
    assert targets["elmstate aio.run, pure"] == ""
    if aio_cores.compiled_aio() is not None:
        assert targets["elmstate aio.run, compiled"] == "≤ 1.5×"
        assert targets["elmstate aio.run, () command, compiled"] == "≤ 1.5×"
    arms = [r[:2] for r in got if len(r) == 8]
    assert arms == [
        ["MemoryStore", "aggregate(feed='inline')"],
        ["MemoryStore", "by hand"],
        ["MemoryStore", "aio.aggregate(feed='inline')"],
        ["MemoryStore", "aio by hand"],
    ]


def test_aio_arms_take_their_own_baseline() -> None:
    group = aggregates.AggregateGroup(aggregates.Memory(), 60, peer=False)
    try:
        for _ in range(2):
            assert group(list(range(11))) > 0
    finally:
        group.close()
    hand = group.arm(aggregates.AIO_BY_HAND).per_key
    assert len(hand) == 2 and all(t > 0 for t in hand)
    row = next(r for r in group.rows() if f"| {aggregates.AIO_INLINE} |" in r)
    cells = [c.strip() for c in row.strip("|").split("|")]
    # its "by hand" column is aio by hand's, not the synchronous by hand's
    expected = statistics.median(hand) * 1e6
    assert float(cells[3].replace(",", "")) == pytest.approx(expected, abs=0.051)
    assert cells[6] == "≤ 15 µs over"


@pytest.mark.parametrize("case", ["aio-run-none", "aio-run-empty"])
@pytest.mark.parametrize("core", ["compiled", "pure"])
def test_callgrind_aio_child(case: str, core: str) -> None:
    if core == "compiled" and aio_cores.compiled_aio() is None:
        pytest.skip("elmstate.aio runs on the pure core here")
    env = dict(os.environ)
    env.pop("ELMSTATE_NO_EXTENSIONS", None)
    if core == "pure":
        env["ELMSTATE_NO_EXTENSIONS"] = "1"
    subprocess.run(  # natively, as callgrind.py's warm-up run does ("setup" does less)
        [sys.executable, str(HERE / "callgrind.py"), "--child", case, "full", "1000", core],
        env=env,
        check=True,
    )

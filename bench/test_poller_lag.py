"""A smoke run of poller_lag.py at a token duration, so that it cannot rot.

Each view of the scenario runs for a fraction of a second over an unbounded and
a bounded buffer. The scenario itself raises if a quote made was not applied
and shown, or if anything is left queued once it drained; this checks the
figures it returns hang together. No timing is asserted.
"""

from __future__ import annotations

import pytest
from poller_lag import VIEWS, main, percentiles, scenario


@pytest.mark.parametrize("maxsize", [None, 150])
@pytest.mark.parametrize("view", VIEWS)
def test_scenario(view: str, maxsize: int | None) -> None:
    row = scenario(view, maxsize, seconds=0.2, symbols=20, interval=0.02, throttle=0.02)
    assert row.polls >= 1
    assert row.messages == 20 * row.polls
    assert 1 <= row.view_calls <= row.messages + 1  # init's view, then at most one per message
    if view == "plain":
        assert row.view_calls == row.messages + 1
    p50, p99, top = row.view_lag
    assert 0 < p50 <= p99 <= top
    assert row.drain >= 0


def test_coalesce_loses_nothing() -> None:
    # scenario raises unless every quote made was applied and shown, and nothing is
    # left queued: a coalesced view never leaves the model the loop waits with unseen.
    row = scenario("coalesce", 100, seconds=0.3, symbols=50, interval=0.01)
    assert row.messages == 50 * row.polls
    assert row.view_calls <= row.polls + 1


def test_percentiles() -> None:
    assert percentiles([]) == (0.0, 0.0, 0.0)
    assert percentiles([3.0]) == (3.0, 3.0, 3.0)
    values = [float(v) for v in range(1, 201)]
    assert percentiles(values) == (100.0, 198.0, 200.0)


def test_main_prints_a_table(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["--seconds", "0.1", "--symbols", "10", "--views", "plain,coalesce", "--maxsize", "0"]
    assert main(argv) == 0
    out = capsys.readouterr().out.splitlines()
    rows = [line for line in out if line.startswith("| plain") or line.startswith("| coalesce")]
    assert len(rows) == 2


def test_main_refuses_an_unknown_view(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--views", "plain,fancy"])
    assert exit_info.value.code == 2
    assert "unknown view 'fancy'" in capsys.readouterr().err

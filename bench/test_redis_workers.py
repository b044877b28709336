"""A smoke run of redis_workers.py at token sizes, so that it cannot rot.

Every arm and mode of the script runs once on a few hundred events: the worker
and the hand-written loop, in this process and in two processes, on SQLite and
(when reachable) PostgreSQL, the lag run, the commandstats and the profile.
The script itself checks that every key ends with the fold of its events and
that nothing is left unacknowledged; this checks that it wrote its table and
chart. No timing is asserted.

Needs the Redis on loopback: skipped without it, except under CI (``CI=true``),
where it fails, as the suite's server tests do.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

redis = pytest.importorskip("redis")

import redis_workers  # noqa: E402


def _require_redis() -> None:
    try:
        with redis.Redis.from_url(redis_workers.REDIS, socket_connect_timeout=5) as r:
            r.ping()
    except redis.RedisError as exc:
        if os.environ.get("CI", "").strip().lower() == "true":
            raise
        pytest.skip(f"no Redis at {redis_workers.REDIS}: {exc}")


def test_smoke(tmp_path: Path) -> None:
    _require_redis()
    md, png = tmp_path / "out.md", tmp_path / "out.png"
    argv = [
        "--events",
        "300",
        "--keys",
        "30",
        "--shards",
        "2",
        "--pages",
        "10,100",
        "--rounds",
        "1",
        "--lag",
        "1",
        "--commandstats",
        "--profile",
        "--md",
        str(md),
        "--png",
        str(png),
    ]
    assert redis_workers.main(argv) == 0
    text = md.read_text()
    assert "| SQLite | 1 | 100 |" in text
    assert "| SQLite | 2 | 10 |" in text
    assert "p99, ms" in text
    assert "xreadgroup" in text
    assert "cProfile" in text
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return
    assert png.stat().st_size > 0
    with redis.Redis.from_url(redis_workers.REDIS) as r:  # nothing of the run is left
        assert not list(r.scan_iter(match=f"{redis_workers.NAMESPACE}:*"))

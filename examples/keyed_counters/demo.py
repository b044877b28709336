"""The whole example in one command, for a quick look or CI.

Starts the workers (two threads of one ``python -m elmstate.redis worker``
process) on a stream of its own and a fresh SQLite file, runs the producer,
stops the workers with SIGTERM, and deletes the stream's Redis keys:

    python demo.py                              # Redis on localhost:6379
    python demo.py --accounts 50 --events 2000 --redis redis://localhost:6380/0
"""

from __future__ import annotations

import argparse
import signal
import subprocess
import sys
import tempfile
import uuid
from collections.abc import Sequence
from pathlib import Path

import accounts
import producer
import redis
import workers


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the keyed-counters example in one command")
    parser.add_argument("--redis", default=accounts.REDIS, help="default: %(default)s")
    parser.add_argument("--accounts", type=int, default=200, help="default: %(default)s")
    parser.add_argument("--events", type=int, default=5000, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=1, help="default: %(default)s")
    parser.add_argument("--workers", type=int, default=2, help="default: %(default)s")
    args = parser.parse_args(argv)
    name = f"{accounts.NAME}-demo-{uuid.uuid4().hex[:8]}"  # never another run's stream
    client = redis.Redis.from_url(args.redis)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        print(f"cannot reach Redis at {args.redis}: {exc}", file=sys.stderr)
        return 1
    with tempfile.TemporaryDirectory() as scratch, client:
        db = Path(scratch) / "accounts.sqlite3"
        command = workers.command(args.redis, db, name, args.workers)
        print("$ " + " ".join(["python", *command[1:]]), flush=True)
        proc = subprocess.Popen(command, cwd=accounts.HERE)
        try:
            status = producer.main(
                [
                    "--redis",
                    args.redis,
                    "--name",
                    name,
                    "--db",
                    str(db),
                    "--accounts",
                    str(args.accounts),
                    "--events",
                    str(args.events),
                    "--seed",
                    str(args.seed),
                    "--timeout",
                    "120",
                ]
            )
        finally:
            proc.send_signal(signal.SIGTERM)
            code = proc.wait(timeout=60)
            keys = list(client.scan_iter(match=f"{name}:*", count=1000))
            if keys:
                client.delete(*keys)
        print(f"workers stopped by SIGTERM, exit status {code}")
    return status or int(code != 0)


if __name__ == "__main__":
    sys.exit(main())

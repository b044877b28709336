"""Terminal 1: run two keyed workers of accounts:PROGRAM until Ctrl-C.

A shortcut for the command line with this example's defaults; it prints the
command, then becomes it:

    python -m elmstate.redis worker accounts:PROGRAM --redis redis://localhost:6379/0 \\
        --store sqlite:////.../accounts.sqlite3 --name keyed-counters --shards 8 --workers 2
"""

from __future__ import annotations

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path

import accounts


def command(redis: str, db: Path, name: str, workers: int) -> list[str]:
    return [
        sys.executable,
        "-m",
        "elmstate.redis",
        "worker",
        "accounts:PROGRAM",  # found in the current directory, as with python -m
        "--redis",
        redis,
        "--store",
        f"sqlite:///{db.resolve()}",  # an absolute path: four slashes
        "--name",
        name,
        "--shards",
        str(accounts.SHARDS),
        "--workers",
        str(workers),
    ]


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description="the workers of the keyed-counters example")
    parser.add_argument("--redis", default=accounts.REDIS, help="default: %(default)s")
    parser.add_argument("--name", default=accounts.NAME, help="default: %(default)s")
    parser.add_argument("--db", type=Path, default=accounts.DB, help="default: %(default)s")
    parser.add_argument("--workers", type=int, default=2, help="default: %(default)s")
    args = parser.parse_args(argv)
    argv_ = command(args.redis, args.db, args.name, args.workers)
    print("$ " + shlex.join(["python", *argv_[1:]]), flush=True)
    os.chdir(accounts.HERE)  # where accounts.py is
    os.execv(sys.executable, argv_)  # signals now reach the command line itself


if __name__ == "__main__":
    main()

"""Terminal 2: produce deposits and withdrawals for many accounts, wait until the
workers have applied them all, then print every account and the totals,
checked against what was produced.

    python producer.py                          # 200 accounts, 5,000 events
    python producer.py --accounts 50 --events 20000 --seed 7

Run it again and again: each run reads the accounts as they are first, and
checks that exactly its own events were added to them, each once, in order.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from collections.abc import Sequence
from pathlib import Path

import accounts
import redis
from accounts import Account, Msg

import elmstate
from elmstate.redis import KeyedProducer, KeyedWorker

POLL = 0.25  # seconds between two looks at the store while waiting
CHUNK = 1000  # events sent per round of put() calls
QUIET = 10.0  # seconds without progress before suggesting that no worker runs


def events(count: int, keys: list[str], seed: int) -> list[tuple[str, Msg]]:
    """``count`` random events: deposits (1..100) and withdrawals (1..150)."""
    rng = random.Random(seed)
    made: list[tuple[str, Msg]] = []
    for _ in range(count):
        op = "deposit" if rng.random() < 0.55 else "withdraw"
        amount = rng.randint(1, 100 if op == "deposit" else 150)
        made.append((rng.choice(keys), {"op": op, "amount": amount}))
    return made


def backlog(client: redis.Redis, name: str) -> int:
    """Entries of ``name`` that the workers have not acknowledged yet (all shards)."""
    total = 0
    for shard in range(accounts.SHARDS):
        for group in client.xinfo_groups(f"{name}:{shard}"):
            if group["name"] == b"elmstate":
                lag = group.get("lag")
                if lag is None:  # Redis cannot tell: is anything left after the last read?
                    last = group["last-delivered-id"].decode()
                    lag = len(client.xrange(f"{name}:{shard}", min=f"({last}", count=1) or ())
                total += int(group["pending"]) + int(lag)
    return total


def load_all(reader: KeyedWorker[Account, Msg], keys: list[str]) -> dict[str, Account]:
    models: dict[str, Account] = {}
    for key in keys:
        model = reader.load(None, key)
        models[key] = Account() if model is None else model
    return models


def wait_for(
    reader: KeyedWorker[Account, Msg],
    keys: list[str],
    before: dict[str, Account],
    expected: dict[str, Account],
    timeout: float,
) -> dict[str, Account]:
    """Poll the store until every account has all its new events (or time runs out)."""
    goal = sum(expected[k].events - before[k].events for k in keys)
    deadline = time.monotonic() + timeout
    last_applied, last_change, last_print, hinted = -1, time.monotonic(), 0.0, False
    while True:
        models = load_all(reader, keys)
        applied = sum(models[k].events - before[k].events for k in keys)
        finished = applied >= goal or any(models[k].events > expected[k].events for k in keys)
        if applied != last_applied:
            last_applied, last_change = applied, time.monotonic()
            if finished or last_change - last_print >= 1.0:  # a line a second at most
                print(f"  applied {applied:,} of {goal:,} events", flush=True)
                last_print = last_change
        if finished:
            return models
        now = time.monotonic()
        if now >= deadline:
            print(f"gave up after {timeout:g} s", flush=True)
            return models
        if not hinted and now - last_change > QUIET:
            hinted = True
            print(
                "  no progress for a while: are the workers running?"
                " (python workers.py, in another terminal)",
                flush=True,
            )
        time.sleep(POLL)


def report(keys: list[str], models: dict[str, Account], expected: dict[str, Account]) -> bool:
    print(f"{'account':<10} {'balance':>8} {'deposits':>9} {'withdrawals':>12} {'refused':>8}")
    wrong = 0
    for key in keys:
        model = models[key]
        mark = "" if model == expected[key] else f"   WRONG, expected {expected[key]}"
        wrong += bool(mark)
        print(
            f"{key:<10} {model.balance:>8,} {model.deposits:>9,} {model.withdrawals:>12,}"
            f" {model.refused:>8,}{mark}"
        )
    total = sum(m.balance for m in models.values())
    print(
        f"total: {len(keys)} accounts, {sum(m.events for m in models.values()):,} events,"
        f" {sum(m.deposits for m in models.values()):,} deposits,"
        f" {sum(m.withdrawals for m in models.values()):,} withdrawals,"
        f" {sum(m.refused for m in models.values()):,} refused, balance {total:,}"
    )
    if wrong:
        print(f"check: FAILED, {wrong} of {len(keys)} accounts differ from what was produced")
        return False
    want = sum(m.balance for m in expected.values())
    print(f"check: OK, every account matches the events produced (expected balance {want:,})")
    return True


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="the producer of the keyed-counters example")
    parser.add_argument("--accounts", type=int, default=200, help="default: %(default)s")
    parser.add_argument("--events", type=int, default=5000, help="default: %(default)s")
    parser.add_argument("--seed", type=int, default=None, help="default: a new one each run")
    parser.add_argument("--redis", default=accounts.REDIS, help="default: %(default)s")
    parser.add_argument("--name", default=accounts.NAME, help="default: %(default)s")
    parser.add_argument("--db", type=Path, default=accounts.DB, help="default: %(default)s")
    parser.add_argument(
        "--timeout", type=float, default=300.0, help="seconds to wait (default: %(default)s)"
    )
    args = parser.parse_args(argv)
    if args.accounts < 1 or args.events < 0:
        parser.error("--accounts must be >= 1 and --events >= 0")
    seed = random.randrange(2**32) if args.seed is None else args.seed
    keys = [f"acct-{i:03d}" for i in range(args.accounts)]

    client = redis.Redis.from_url(args.redis)
    try:
        client.ping()
    except redis.ConnectionError as exc:
        print(f"cannot reach Redis at {args.redis}: {exc}", file=sys.stderr)
        return 1
    with client, elmstate.SQLiteStore(args.db) as store:
        producer = KeyedProducer(client, args.name, shards=accounts.SHARDS)
        # A worker that never runs: any process may read the models through load().
        reader: KeyedWorker[Account, Msg] = KeyedWorker(
            client,
            args.name,
            shards=accounts.SHARDS,
            store=store,
            init=accounts.init,
            update=accounts.update,
            hydrator=accounts.hydrate,
            dehydrator=accounts.dehydrate,
        )
        waiting = backlog(client, args.name)
        if waiting:  # an earlier run's events: let them land before reading the accounts
            print(f"waiting for the workers to apply {waiting:,} earlier events", flush=True)
            while backlog(client, args.name):
                time.sleep(POLL)
        before = load_all(reader, keys)
        made = events(args.events, keys, seed)
        per_key: dict[str, list[Msg]] = {key: [] for key in keys}
        for key, message in made:
            per_key[key].append(message)
        expected = {key: accounts.fold(before[key], per_key[key]) for key in keys}

        print(f"producing {len(made):,} events for {len(keys)} accounts on {args.name!r}", end="")
        print(f" (seed {seed})", flush=True)
        started = time.monotonic()
        # put() appends a key's messages in one round trip. Only the order of each
        # key's own events matters, so a chunk of events goes out key by key.
        for start in range(0, len(made), CHUNK):
            chunk: dict[str, list[Msg]] = {}
            for key, message in made[start : start + CHUNK]:
                chunk.setdefault(key, []).append(message)
            for key, messages in chunk.items():
                producer.put(None, key, *messages)
        print(f"  produced in {time.monotonic() - started:.1f} s; waiting for the workers")
        models = wait_for(reader, keys, before, expected, args.timeout)
        print(f"  done in {time.monotonic() - started:.1f} s")
    return 0 if report(keys, models, expected) else 1


if __name__ == "__main__":
    sys.exit(main())

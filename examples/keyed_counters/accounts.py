"""Bank accounts, one model per key: the program that the workers run.

Every account (a key such as ``acct-007``) has its own model, an ``Account``.
Messages are JSON objects: ``{"op": "deposit", "amount": 30}`` or
``{"op": "withdraw", "amount": 50}``. A withdrawal larger than the balance is
refused, so the result depends on the order of an account's events: a model
is right only if every event was applied once, in the order it was produced.

The workers load it by name: ``python -m elmstate.redis worker accounts:PROGRAM ...``
(see README.md). The producer imports it too, to know what to expect.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

import elmstate
from elmstate.redis import Program
from elmstate.typing import Transform

HERE = Path(__file__).resolve().parent

# The defaults every script here shares: the only server needed is Redis on
# localhost; the snapshots go to an SQLite file beside this one.
REDIS = "redis://localhost:6379/0"
NAME = "keyed-counters"  # the logical stream: Redis keys keyed-counters:0 .. :7, ...
SHARDS = 8
DB = HERE / "accounts.sqlite3"

Msg = Mapping[str, Any]


@dataclass(frozen=True)
class Account:
    balance: int = 0
    deposits: int = 0
    withdrawals: int = 0
    refused: int = 0  # withdrawals larger than the balance
    events: int = 0  # every event applied, refused ones included


def init() -> tuple[Account, None]:
    return Account(), None


def update(msg: Msg) -> Transform[Account, Msg] | None:
    op, amount = msg.get("op"), msg.get("amount")
    if not isinstance(amount, int) or amount <= 0:
        raise ValueError(f"not a positive amount: {msg!r}")  # a poison message: dead-lettered
    if op == "deposit":
        return lambda a: (
            replace(a, balance=a.balance + amount, deposits=a.deposits + 1, events=a.events + 1),
            None,
        )
    if op == "withdraw":

        def withdraw(a: Account) -> tuple[Account, None]:
            if amount > a.balance:
                return replace(a, refused=a.refused + 1, events=a.events + 1), None
            return replace(
                a, balance=a.balance - amount, withdrawals=a.withdrawals + 1, events=a.events + 1
            ), None

        return withdraw
    raise ValueError(f"unknown op: {msg!r}")


def hydrate(ctx: elmstate.Context, key: str, value: bytes) -> tuple[Account, None]:
    return Account(**json.loads(value)), None


def dehydrate(ctx: elmstate.Context, key: str, model: Account) -> bytes:
    return json.dumps(asdict(model)).encode()


PROGRAM = Program(init, update, hydrate, dehydrate)


def fold(model: Account, messages: Iterable[Msg]) -> Account:
    """What ``messages`` make of ``model``, applied in order, each once: the
    producer's expectation, computed with the very same ``update``."""
    for message in messages:
        transform = update(message)
        if transform is not None:
            model, _ = transform(model)
    return model

"""Helpers for the in-process tests of elmstate.redis's keyed side (tests/test_redis_worker.py).

- ``Fold``: an order-sensitive keyed program whose model is the list of the
  values applied to the key, in order (so a lost, repeated or reordered entry
  shows), with poison values, ``Emit`` and loop-back messages, and counts of
  every transform call.
- ``Running``: a worker's ``run(ctx)`` in a thread, stopped and checked at the end.
- ``hooked_client``: a real redis-py client whose connections count the round
  trips they make and call a test's hook before sending a command (to change
  the server's state at an exact instant of the worker's work).
- ``Keyspace``: a unique logical stream name, its Redis keys deleted afterwards.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections import Counter
from types import ModuleType
from typing import Any, Callable

import redis
from _stores import REDIS

SAFETY = 10.0  # seconds: a wait that should have ended fails the test instead of hanging


def wait_until(predicate: Callable[[], bool], timeout: float = SAFETY, step: float = 0.01) -> bool:
    """Poll ``predicate`` until it holds or ``timeout`` seconds pass; whether it held."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() >= deadline:
            return bool(predicate())
        time.sleep(step)
    return True


class Keyspace:
    """A logical stream name of the test's own; every Redis key under it deleted on close."""

    def __init__(self, admin: redis.Redis, label: str = "") -> None:
        self.admin = admin
        self.name = f"elmstate-wt-{label}{uuid.uuid4().hex[:10]}"

    def keys(self) -> set[str]:
        return {k.decode() for k in self.admin.scan_iter(match=f"{self.name}*", count=1000)}

    def close(self) -> None:
        keys = list(self.admin.scan_iter(match=f"{self.name}*", count=1000))
        if keys:
            self.admin.delete(*keys)


class Fold:
    """A keyed program: the model is the list of the values applied, in order.

    Messages: a JSON value is appended, unless it is in ``poison`` (its
    transform raises ``RuntimeError("poison <value>")``); ``{"emit": v, "to": k}``
    appends ``v`` and its command returns ``Emit(k, v)``; ``{"loop": v}``
    appends the dict and its command returns the plain message ``v``, which
    loops back to ``update``. ``calls`` counts transform calls per value.
    """

    def __init__(self, elm: ModuleType, poison: tuple[Any, ...] = ()) -> None:
        self.emit_cls = elm.redis.Emit
        self.poison = {json.dumps(p) for p in poison}
        self.calls: Counter[str] = Counter()
        self.hydrated: list[tuple[str, bytes]] = []
        self.before_hydrate: Callable[[str, bytes], None] | None = None
        self.delay = 0.0  # seconds each transform sleeps (a slow program)
        self._lock = threading.Lock()

    def init(self) -> tuple[list[Any], None]:
        return [], None

    def update(self, message: Any) -> Callable[[list[Any]], tuple[list[Any], Any]]:
        tag = json.dumps(message, sort_keys=True)

        def transform(model: list[Any]) -> tuple[list[Any], Any]:
            with self._lock:
                self.calls[tag] += 1
            if self.delay:
                time.sleep(self.delay)
            if tag in self.poison:
                raise RuntimeError(f"poison {message!r}")
            if isinstance(message, dict) and "emit" in message:
                emit = self.emit_cls(message["to"], message["emit"])
                return [*model, message["emit"]], [lambda: emit]
            if isinstance(message, dict) and "loop" in message:
                back = message["loop"]
                return [*model, message], [lambda: back]
            return [*model, message], None

        return transform

    def hydrator(self, ctx: Any, key: str, value: bytes) -> tuple[list[Any], None]:
        hook = self.before_hydrate
        if hook is not None:
            hook(key, value)
        self.hydrated.append((key, value))
        return json.loads(value), None

    def dehydrator(self, ctx: Any, key: str, model: list[Any]) -> bytes:
        return json.dumps(model).encode()

    def program(self, elm: ModuleType) -> Any:
        return elm.redis.Program(self.init, self.update, self.hydrator, self.dehydrator)

    def calls_of(self, message: Any) -> int:
        return self.calls[json.dumps(message, sort_keys=True)]


def worker(
    elm: ModuleType, client: redis.Redis, name: str, store: Any, fold: Fold, **options: Any
) -> Any:
    """A KeyedWorker of ``elm``'s generation running ``fold``."""
    options.setdefault("lease", 5.0)
    return elm.redis.KeyedWorker(
        client,
        name,
        store=store,
        init=fold.init,
        update=fold.update,
        hydrator=fold.hydrator,
        dehydrator=fold.dehydrator,
        **options,
    )


class Running:
    """``worker.run(ctx)`` in a thread; ``stop()`` cancels ctx and joins it."""

    def __init__(self, elm: ModuleType, worker: Any) -> None:
        self.worker = worker
        self.ctx = elm.Context()
        self.error: BaseException | None = None
        self.result: Any = "not returned"
        self.stopped_at = 0.0
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        try:
            self.result = self.worker.run(self.ctx)
        except BaseException as exc:  # recorded for the test to inspect
            self.error = exc
        finally:
            self.stopped_at = time.monotonic()

    def stop(self, timeout: float = SAFETY) -> float:
        """Cancel, join, re-raise the worker's error; the seconds run() took to return."""
        started = time.monotonic()
        self.ctx.cancel()
        self.thread.join(timeout)
        assert not self.thread.is_alive(), "run() did not return after ctx was cancelled"
        if self.error is not None:
            raise self.error
        assert self.result is None, f"run() returned {self.result!r}, not None"
        return self.stopped_at - started

    def __enter__(self) -> Running:
        return self

    def __exit__(self, *exc: object) -> None:
        if self.thread.is_alive() or self.error is not None:
            self.stop()


def hooked_client(
    hook: Callable[[bytes], None] | None = None, **kwargs: Any
) -> tuple[redis.Redis, list[int]]:
    """A real client whose connections call ``hook(packed)`` with the bytes of every
    request before sending it (a single command, or a whole pipeline), and count
    the sends (one send = one round trip: a pipeline packs all its commands into
    one). Returns the client and the one-element send counter."""
    sends = [0]

    class Connection(redis.Connection):
        def send_packed_command(self, command: Any, check_health: bool = True) -> None:
            if hook is not None:
                packed = command if isinstance(command, bytes) else b"".join(command)
                hook(packed)
            sends[0] += 1
            super().send_packed_command(command, check_health)

    pool = redis.ConnectionPool.from_url(REDIS, connection_class=Connection, **kwargs)
    return redis.Redis(connection_pool=pool), sends


def names_arg(packed: bytes, arg: str) -> bool:
    """Whether the request ``packed`` (RESP) has ``arg`` as one of its arguments."""
    return b"\r\n" + arg.encode() + b"\r\n" in packed


def group_info(client: redis.Redis, stream: str, group: str = "elmstate") -> dict[str, Any]:
    for info in client.xinfo_groups(stream):
        if info["name"].decode() == group:
            return dict(info)
    raise AssertionError(f"no group {group!r} on {stream}")


def pending_ids(client: redis.Redis, stream: str, group: str = "elmstate") -> list[bytes]:
    rows = client.xpending_range(stream, group, min="-", max="+", count=100_000)
    return [row["message_id"] for row in rows]


def dead_letters(client: redis.Redis, name: str) -> list[dict[str, bytes]]:
    return [
        {k.decode(): v for k, v in fields.items()}
        for _, fields in client.xrange(f"{name}:dead", "-", "+")
    ]

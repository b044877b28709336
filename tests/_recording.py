"""Recording fakes for the loop tests: every call of a tick lands in one ordered list.

``Recorder.calls`` is the log; ``Recorder.fail(name, nth)`` makes the ``nth`` call
recorded under ``name`` raise (after it was recorded), so a test can break a tick
at any point and compare the whole log with what it expected.
"""

from __future__ import annotations

import threading
from collections import Counter
from typing import Any, Callable


class Stop(Exception):
    """Raised by a fake to end a ``run``, which never returns on its own."""


class Recorder:
    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._counts: Counter[str] = Counter()
        self._faults: dict[tuple[str, int], BaseException] = {}

    def fail(self, name: str, nth: int = 1, exc: BaseException | None = None) -> BaseException:
        """Make the ``nth`` call of ``name`` raise ``exc`` (returned, for ``is`` checks)."""
        if exc is None:
            exc = RuntimeError(f"{name} #{nth} failed")
        self._faults[(name, nth)] = exc
        return exc

    def record(self, name: str, *args: Any) -> None:
        self.calls.append((name, *args))
        self._counts[name] += 1
        exc = self._faults.get((name, self._counts[name]))
        if exc is not None:
            raise exc

    def count(self, name: str) -> int:
        return self._counts[name]


class FakeQueue:
    """A recording producer and consumer: ``get`` returns scripted messages, then raises Stop.

    ``put`` only records (produced messages do not come back). Every ``ctx`` the
    library hands over is kept in ``contexts``.
    """

    def __init__(self, rec: Recorder, script: Any = ()) -> None:
        self.rec = rec
        self.script = list(script)
        self.contexts: list[Any] = []

    def get(self, ctx: Any) -> Any:
        self.contexts.append(ctx)
        self.rec.record("get")
        if not self.script:
            raise Stop("script exhausted")
        return self.script.pop(0)

    def put(self, ctx: Any, *values: Any) -> None:
        self.contexts.append(ctx)
        self.rec.record("put", values)

    def commit(self) -> None:
        self.rec.record("commit")

    def rollback(self) -> None:
        self.rec.record("rollback")


class Program:
    """A recording summing program.

    The model is an int. An int message ``m`` selects a transform adding ``m`` whose
    command has one entry returning ``("from", m)``; the message ``"ignore"`` makes
    update return None. ``init`` starts at 0 with one command entry returning
    ``("from", "init")``.
    """

    def __init__(self, rec: Recorder, *, replay: Callable[[], bool] | None = None) -> None:
        self.rec = rec
        self._replay = replay

    def command(self, label: Any) -> list[Callable[[], Any]]:
        def entry() -> Any:
            self.rec.record("command", label)
            return ("from", label)

        return [entry]

    def init(self) -> tuple[Any, Any]:
        self.rec.record("init")
        return 0, self.command("init")

    def update(self, message: Any) -> Any:
        self.rec.record("update", message)
        if message == "ignore":
            return None

        def transform(model: int) -> tuple[Any, Any]:
            self.rec.record("transform", message, model)
            return model + message, self.command(message)

        return transform

    def view(self, model: Any) -> None:
        self.rec.record("view", model)

    def replay(self) -> bool:
        self.rec.record("replay")
        assert self._replay is not None
        return self._replay()


def live_threads() -> set[threading.Thread]:
    """Running threads, less the library's shared timer thread (it lives on by design)."""
    return {t for t in threading.enumerate() if t.name != "elmstate-timer"}


def vid(value: Any) -> str:
    """A stable pytest id for a parameter: its repr, or its type name if that has an address."""
    text = repr(value)
    return type(value).__name__ if " at 0x" in text else text

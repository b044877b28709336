"""Differential, property-based test of Buffer: both cores against a deque model.

Hypothesis drives random sequences of put / get / commit / rollback /
new_consumer / consumer close / buffer close against the compiled core's Buffer,
the pure core's Buffer and a plain ``collections.deque`` model at once, and
requires identical observable results: returned values, raised exception types,
``len()``, ``slice()`` and ``diff()``.

The buffers use ``default_cleaner`` with ``cooldown=0``, so cleaning happens
synchronously inside put / commit / consumer close and retention can be modelled:
after each of those, every message that all open consumers have committed past is
gone (nothing is dropped while there is no open consumer, nor once closed).

``get`` is only called when the model says a message is available (it would
block otherwise); when none is, the rule checks ``diff() == 0`` instead.
"""

from __future__ import annotations

import collections
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

import pytest
from conftest import CORES, PURE_ONLY
from hypothesis import settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    consumes,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

SAFETY = 30.0  # seconds: a get that should not block fails instead of hanging
WATCHDOG = 300.0  # seconds before the watchdog (conftest) fails a test


def _cores() -> dict[str, ModuleType]:
    cores: dict[str, ModuleType] = {}
    for name in ("compiled", "pure"):
        core = CORES[name]
        if isinstance(core, str):
            if PURE_ONLY:
                continue  # ELMSTATE_NO_EXTENSIONS is set: the compiled side is skipped
            pytest.fail(core)
        cores[name] = core
    return cores


@dataclass
class ModelConsumer:
    read: int  # absolute index of the next message to read
    committed: int
    closed: bool = False


class Model:
    """The reference: a deque of held messages and absolute consumer positions."""

    def __init__(self) -> None:
        self.items: collections.deque[int] = collections.deque()
        self.start = 0  # absolute index of items[0]
        self.closed = False
        self.consumers: list[ModelConsumer] = []

    @property
    def end(self) -> int:
        return self.start + len(self.items)

    def clean(self) -> None:
        """default_cleaner with cooldown 0: drop what every open consumer committed past."""
        if self.closed:
            return
        offsets = [c.committed - self.start for c in self.consumers if not c.closed]
        n = min(offsets) if offsets else 0
        for _ in range(max(0, min(n, len(self.items)))):
            self.items.popleft()
            self.start += 1

    def diff(self, c: ModelConsumer) -> int:
        return min(self.end - c.read, len(self.items))


Outcome = tuple[str, Any]  # ("ok", value) or ("raise", exception type name)


class BufferMachine(RuleBasedStateMachine):
    consumers = Bundle("consumers")

    def __init__(self, cores: dict[str, ModuleType]) -> None:
        super().__init__()
        self.cores = cores
        self.buffers: dict[str, Any] = {}
        for name, elm in cores.items():
            buf = elm.Buffer()
            buf.set_cleaner(elm.default_cleaner, cooldown=0)
            self.buffers[name] = buf
        self.model = Model()
        self.real: list[dict[str, Any]] = []  # per consumer id: core name -> consumer
        self.next_message = 0
        # Gets are only made where they must not block; should one block anyway,
        # this ends it (DeadlineExceeded), and the watchdog below backs it up.
        self.safety = {name: elm.Context(timeout=SAFETY) for name, elm in cores.items()}

    # ----------------------------------------------------------------- helpers

    def each(self, fn: Callable[[str, Any], Any]) -> Outcome:
        """Run ``fn(core_name, buffer)`` on every core; all outcomes must agree."""
        return self.each_raw(fn)[0]

    def each_raw(self, fn: Callable[[str, Any], Any]) -> tuple[Outcome, dict[str, Any]]:
        """Like :meth:`each`, also returning each core's raw return value."""
        values: dict[str, Any] = {}
        results: dict[str, Outcome] = {}
        for name, buf in self.buffers.items():
            try:
                values[name] = fn(name, buf)
            except Exception as exc:  # compared by type name: both cores share _errors
                results[name] = ("raise", type(exc).__name__)
            else:
                results[name] = ("ok", values[name])
        comparable = {
            name: (
                kind,
                type(v).__name__
                if name in values and kind == "ok" and not isinstance(v, (int, type(None)))
                else v,
            )
            for name, (kind, v) in results.items()
        }
        assert len(set(comparable.values())) == 1, f"the cores disagree: {comparable}"
        return next(iter(comparable.values())), values

    def fresh(self, k: int) -> list[int]:
        values = list(range(self.next_message, self.next_message + k))
        self.next_message += k
        return values

    # ----------------------------------------------------------------- rules

    @rule(k=st.integers(min_value=0, max_value=5))
    def put(self, k: int) -> None:
        values = self.fresh(k)
        got = self.each(lambda name, buf: buf.put(None, *values))
        if self.model.closed:
            assert got == ("raise", "Closed")
        else:
            assert got == ("ok", None)
            self.model.items.extend(values)
            self.model.clean()

    @rule(target=consumers)
    def new_consumer(self) -> int:
        got, made = self.each_raw(lambda name, buf: buf.new_consumer())
        index = len(self.real)
        if not self.model.closed:
            assert got == ("ok", "BufferConsumer"), got
            self.real.append(made)
            self.model.consumers.append(ModelConsumer(self.model.start, self.model.start))
        else:  # a closed buffer makes no consumers (docs/contract.md#closing-a-buffer)
            assert got == ("raise", "Closed"), got
            self.real.append({})
            self.model.consumers.append(ModelConsumer(0, 0, closed=True))
        return index

    @rule(i=consumers)
    def get(self, i: int) -> None:
        c = self.model.consumers[i]
        real = self.real[i]
        if not real:
            return
        if c.closed or self.model.closed:
            got = self.each(lambda name, buf: real[name].get(self.safety[name]))
            assert got == ("raise", "Closed"), got
            return
        if c.read < self.model.end:
            got = self.each(lambda name, buf: real[name].get(self.safety[name]))
            assert got == ("ok", self.model.items[c.read - self.model.start])
            c.read += 1
        else:
            got = self.each(lambda name, buf: buf.diff(real[name]))
            assert got == ("ok", 0)

    @rule(i=consumers)
    def get_with_ended_ctx(self, i: int) -> None:
        real = self.real[i]
        if not real:
            return
        c = self.model.consumers[i]

        ended: list[Any] = []

        def call(name: str, buf: Any) -> Any:
            ctx = self.cores[name].Context()
            ctx.cancel()
            ended.append(ctx)
            return real[name].get(ctx)

        got = self.each(call)
        for ctx in ended:
            # Raising ctx.err stores the traceback (and so the get's frame, which
            # references ctx and the consumer) on the err: a cycle that would keep
            # the consumer alive until a gc pass. Break it, as dropping a consumer
            # is checked by refcount alone.
            ctx.err.__traceback__ = None
        expected = "Closed" if (c.closed or self.model.closed) else "Canceled"
        assert got == ("raise", expected), got

    @rule(i=consumers)
    def commit(self, i: int) -> None:
        self._settle(i, "commit")

    @rule(i=consumers)
    def rollback(self, i: int) -> None:
        self._settle(i, "rollback")

    def _settle(self, i: int, what: str) -> None:
        real = self.real[i]
        if not real:
            return
        c = self.model.consumers[i]
        got = self.each(lambda name, buf: getattr(real[name], what)())
        if c.closed:
            expected: Outcome = ("raise", "Closed")
        elif c.read == c.committed:
            expected = ("raise", "NothingUncommitted")
        else:
            expected = ("ok", None)
        if self.model.closed and got == ("raise", "Closed"):
            return  # the docs leave commit/rollback after a buffer close open: both agree
        assert got == expected, (what, got, expected)
        if got[0] == "ok":
            if what == "commit":
                c.committed = c.read
                self.model.clean()
            else:
                c.read = c.committed

    @rule(i=consumers)
    def close_consumer(self, i: int) -> None:
        real = self.real[i]
        if not real:
            return
        got = self.each(lambda name, buf: real[name].close())
        assert got == ("ok", None)
        self.model.consumers[i].closed = True
        self.model.clean()

    @precondition(lambda self: not self.model.closed)
    @rule()
    def close_buffer(self) -> None:
        got = self.each(lambda name, buf: buf.close())
        assert got == ("ok", None)
        self.model.closed = True

    @precondition(lambda self: self.model.closed)
    @rule()
    def close_buffer_again(self) -> None:
        assert self.each(lambda name, buf: buf.close()) == ("ok", None)

    @rule(i=consumes(consumers))
    def drop_consumer(self, i: int) -> None:
        """Forget an open consumer without closing it: it must stop holding messages."""
        real = self.real[i]
        if not real:
            return
        real.clear()  # the only references: the consumers are freed here
        self.model.consumers[i].closed = True
        # Whether the drop itself cleans is unspecified; an empty put is a cleaning
        # trigger, after which what the dropped consumer held must be gone.
        got = self.each(lambda name, buf: buf.put(None))
        assert got == (("raise", "Closed") if self.model.closed else ("ok", None)), got
        self.model.clean()

    # ----------------------------------------------------------------- invariants

    @invariant()
    def same_contents(self) -> None:
        if not hasattr(self, "model"):
            return
        expected = list(self.model.items)
        for name, buf in self.buffers.items():
            assert len(buf) == len(expected), (name, len(buf), expected)
            assert buf.slice() == expected, (name, buf.slice(), expected)

    @invariant()
    def same_diffs(self) -> None:
        if not hasattr(self, "model"):
            return
        for c, real in zip(self.model.consumers, self.real):
            if c.closed or not real:
                continue
            for name, buf in self.buffers.items():
                assert buf.diff(real[name]) == self.model.diff(c), name

    def teardown(self) -> None:
        for buf in self.buffers.values():
            buf.close()


def test_buffer_matches_the_model_on_both_cores() -> None:
    cores = _cores()
    run_state_machine_as_test(  # type: ignore[no-untyped-call]
        lambda: BufferMachine(cores),
        settings=settings(max_examples=500, stateful_step_count=80, deadline=None),
    )

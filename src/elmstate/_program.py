"""``Program``: a program's callbacks bundled, with the run modes as methods."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, Generic, NoReturn, cast

from . import _validate as check
from ._aggregate import aggregate
from ._backend import core
from ._supervise import supervise
from .typing import (
    Consumer,
    DeadLetter,
    Dehydrator,
    Fetcher,
    Hydrator,
    Init,
    Model,
    Msg,
    Producer,
    Replay,
    Store,
    Update,
    View,
)

if TYPE_CHECKING:
    from ._core_py import Context
else:
    Context = core.Context  # for typing.get_type_hints at run time


def _no_view(model: object) -> None:
    """The view of a Program made without one."""


class Program(Generic[Model, Msg]):
    """A program — ``init``, ``update``, an optional ``view``, and for
    :meth:`aggregate` a ``hydrator`` and ``dehydrator`` — with the run modes as
    methods.

    Each method takes the keywords of the function of the same name.
    ``producer`` and ``consumer`` are optional and go together: with neither, a
    fresh :class:`~elmstate.Buffer` and a consumer of it are made for the call
    and closed when it returns or raises; giving only one is a ``TypeError``.
    ``view`` is kept as given (``None`` when omitted, and a no-op view runs).
    """

    __slots__ = ("init", "update", "view", "hydrator", "dehydrator")

    def __init__(
        self,
        init: Init[Model, Msg],
        update: Update[Model, Msg],
        view: View[Model] | None = None,
        *,
        hydrator: Hydrator[Model] | None = None,
        dehydrator: Dehydrator[Model] | None = None,
    ) -> None:
        check.callable_arg("init", init)
        check.callable_arg("update", update)
        check.optional_callable_arg("view", view)
        check.optional_callable_arg("hydrator", hydrator)
        check.optional_callable_arg("dehydrator", dehydrator)
        self.init = init
        self.update = update
        self.view = view
        self.hydrator = hydrator
        self.dehydrator = dehydrator

    def run(
        self,
        *,
        producer: Producer[Msg] | None = None,
        consumer: Consumer[Msg] | None = None,
        ctx: Context | None = None,
        replay: Replay | None = None,
    ) -> NoReturn:
        """:func:`elmstate.run` with this program: ticks until ``ctx`` ends or a tick fails."""
        with _queue(producer, consumer) as (put, get):
            core.run(self.init, self.update, self._view(), put, get, ctx=ctx, replay=replay)

    def batch(
        self,
        fetcher: Fetcher[Msg],
        *,
        producer: Producer[Msg] | None = None,
        consumer: Consumer[Msg] | None = None,
        ctx: Context | None = None,
        replay: Replay | None = None,
        feed: str = "thread",
    ) -> Model:
        """:func:`elmstate.batch` with this program: returns the last model."""
        with _queue(producer, consumer) as (put, get):
            return core.batch(
                self.init,
                self.update,
                self._view(),
                put,
                get,
                fetcher,
                ctx=ctx,
                replay=replay,
                feed=feed,
            )

    def aggregate(
        self,
        fetcher: Fetcher[Msg],
        store: Store,
        key: str,
        *,
        producer: Producer[Msg] | None = None,
        consumer: Consumer[Msg] | None = None,
        ctx: Context | None = None,
        replay: Replay | None = None,
        feed: str = "thread",
    ) -> Model:
        """:func:`elmstate.aggregate` with this program's hydrator and dehydrator:
        returns the stored model. Without them it raises ``TypeError``."""
        missing = [
            name
            for name, value in (("hydrator", self.hydrator), ("dehydrator", self.dehydrator))
            if value is None
        ]
        if missing:
            raise TypeError(
                "Program.aggregate needs the program's hydrator and dehydrator "
                f"(Program(..., hydrator=..., dehydrator=...)); missing: {', '.join(missing)}"
            )
        hydrator = cast("Hydrator[Model]", self.hydrator)
        dehydrator = cast("Dehydrator[Model]", self.dehydrator)
        with _queue(producer, consumer) as (put, get):
            return aggregate(
                self.init,
                self.update,
                self._view(),
                put,
                get,
                fetcher,
                store,
                hydrator,
                dehydrator,
                key,
                ctx=ctx,
                replay=replay,
                feed=feed,
            )

    def supervise(
        self,
        *,
        producer: Producer[Msg] | None = None,
        consumer: Consumer[Msg] | None = None,
        ctx: Context | None = None,
        replay: Replay | None = None,
        max_failures: int = 3,
        on_dead_letter: DeadLetter[Msg] | None = None,
        backoff: tuple[float, float] = (0.01, 1.0),
    ) -> NoReturn:
        """:func:`elmstate.supervise` with this program."""
        with _queue(producer, consumer) as (put, get):
            supervise(
                self.init,
                self.update,
                self._view(),
                put,
                get,
                ctx=ctx,
                replay=replay,
                max_failures=max_failures,
                on_dead_letter=on_dead_letter,
                backoff=backoff,
            )

    def _view(self) -> View[Model]:
        return _no_view if self.view is None else self.view

    def __repr__(self) -> str:
        return f"Program(init={self.init!r}, update={self.update!r})"


@contextmanager
def _queue(
    producer: Producer[Any] | None, consumer: Consumer[Any] | None
) -> Iterator[tuple[Producer[Any], Consumer[Any]]]:
    """The caller's producer and consumer, or a fresh Buffer and its consumer,
    closed on leaving (the consumer first: it detaches from the buffer)."""
    if producer is not None and consumer is not None:
        yield producer, consumer
        return
    if producer is not None or consumer is not None:
        given, missing = ("producer", "consumer") if consumer is None else ("consumer", "producer")
        raise TypeError(
            f"producer and consumer go together: a {given} was given without a {missing} "
            "(give both, or neither for a fresh Buffer)"
        )
    with core.Buffer() as buffer, buffer.new_consumer() as reader:
        yield buffer, reader

"""Program: a program's callbacks with the run modes as methods (docs/programs.md)."""

from __future__ import annotations

from typing import Any

import pytest
from _helpers import SAFETY


def init() -> tuple[int, Any]:
    return 0, None


def update(message: Any) -> Any:
    if message == "poison":
        raise ValueError("poison")
    return lambda model: (model + message, None)


def hydrate(ctx: Any, key: str, value: bytes) -> tuple[int, None]:
    return int(value), None


def dehydrate(ctx: Any, key: str, model: int) -> bytes:
    return str(model).encode()


def fetch_1_2_3(ctx: Any) -> tuple[list[int], bool]:
    return [1, 2, 3], False


class Stopper:
    """A view that records models and cancels its ctx once it has seen ``stop_at``."""

    def __init__(self, elm: Any, stop_at: Any) -> None:
        self.ctx = elm.Context(timeout=SAFETY * 4)
        self.stop_at = stop_at
        self.seen: list[Any] = []

    def __call__(self, model: Any) -> None:
        self.seen.append(model)
        if model == self.stop_at:
            self.ctx.cancel()


@pytest.fixture(params=["omitted", "given"])
def queue(elm, request):
    """The keywords for a method's producer and consumer: none, or a Buffer's."""
    if request.param == "omitted":
        yield {}
        return
    with elm.Buffer() as buffer, buffer.new_consumer() as consumer:
        yield {"producer": buffer, "consumer": consumer}
        # the caller's own: the Program never closes them
        buffer.put(None, "still open")
        assert buffer.slice()[-1] == "still open"
        consumer.get()  # not closed: it reads (whatever the run left unread first)


def test_attributes(elm):
    view = Stopper(elm, None)
    program = elm.Program(init, update, view, hydrator=hydrate, dehydrator=dehydrate)
    assert program.init is init and program.update is update and program.view is view
    assert program.hydrator is hydrate and program.dehydrator is dehydrate
    bare = elm.Program(init, update)
    assert bare.view is None and bare.hydrator is None and bare.dehydrator is None
    assert "Program(init=" in repr(bare)
    with pytest.raises(AttributeError):
        bare.other = 1  # slots: a typo is an error, not a new attribute


def test_run(elm, queue):
    def init_with_command() -> tuple[int, Any]:
        return 0, elm.new_command(1, 2)

    view = Stopper(elm, 3)
    program = elm.Program(init_with_command, update, view)
    with pytest.raises(elm.Canceled) as caught:
        program.run(ctx=view.ctx, **queue)
    assert caught.value is view.ctx.err
    assert view.seen == [0, 1, 3]


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_batch(elm, queue, feed):
    view = Stopper(elm, None)
    program = elm.Program(init, update, view)
    assert program.batch(fetch_1_2_3, feed=feed, **queue) == 6
    assert view.seen == [0, 1, 3, 6]


def test_batch_without_a_view(elm, queue):
    assert elm.Program(init, update).batch(fetch_1_2_3, **queue) == 6


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_aggregate(elm, queue, feed):
    store = elm.MemoryStore()
    program = elm.Program(init, update, hydrator=hydrate, dehydrator=dehydrate)
    assert program.aggregate(fetch_1_2_3, store, "k", feed=feed, **queue) == 6
    assert store.load(None, "k") == b"6"
    assert program.aggregate(fetch_1_2_3, store, "k", feed=feed, **queue) == 12


def test_supervise(elm, queue):
    def init_with_command() -> tuple[int, Any]:
        return 0, elm.new_command(1, "poison", 2)

    view = Stopper(elm, 3)
    letters: list[Any] = []
    program = elm.Program(init_with_command, update, view)
    with pytest.raises(elm.Canceled) as caught:
        program.supervise(
            ctx=view.ctx,
            max_failures=2,
            on_dead_letter=lambda m, e: letters.append(m),
            backoff=(0.0, 0.0),
            **queue,
        )
    assert caught.value is view.ctx.err
    assert letters == ["poison"]
    assert view.seen == [0, 1, 1, 1, 3]  # init, 1, a restart after each failure, 2


def test_keywords_reach_the_function(elm, queue):
    program = elm.Program(init, update)
    with pytest.raises(ValueError, match="feed"):
        program.batch(fetch_1_2_3, feed="fast", **queue)
    with pytest.raises(ValueError, match="max_failures"):
        program.supervise(max_failures=0, **queue)
    replays: list[bool] = []

    def replay() -> bool:
        replays.append(True)
        return True

    assert program.batch(fetch_1_2_3, replay=replay, **queue) == 6
    assert replays  # consulted every tick


def test_a_fresh_buffer_is_closed_on_return_and_on_raise(elm):
    # Every method gets its queue from _queue: what it yields is closed after.
    queue = elm._program._queue  # the generation's own: it makes that core's Buffer
    with queue(None, None) as (buffer, consumer):
        assert type(buffer) is elm.Buffer and type(consumer) is elm.BufferConsumer
        buffer.put(None, 1)
        assert consumer.get() == 1
    with pytest.raises(elm.Closed):
        buffer.put(None, 2)
    with pytest.raises(elm.Closed):
        consumer.get()
    with pytest.raises(LookupError), queue(None, None) as (buffer, consumer):
        raise LookupError
    with pytest.raises(elm.Closed):
        buffer.put(None, 2)


@pytest.mark.parametrize("given", ["producer", "consumer"])
def test_only_one_of_producer_and_consumer_is_refused(elm, given):
    calls: list[str] = []

    def counted_init() -> tuple[int, Any]:
        calls.append("init")
        return 0, None

    program = elm.Program(counted_init, update, hydrator=hydrate, dehydrator=dehydrate)
    with elm.Buffer() as buffer, buffer.new_consumer() as consumer:
        kwargs = {given: buffer if given == "producer" else consumer}
        calls_of = [
            lambda: program.run(**kwargs),
            lambda: program.batch(fetch_1_2_3, **kwargs),
            lambda: program.aggregate(fetch_1_2_3, elm.MemoryStore(), "k", **kwargs),
            lambda: program.supervise(**kwargs),
        ]
        for call in calls_of:
            with pytest.raises(TypeError, match="producer and consumer go together"):
                call()
    assert calls == []


@pytest.mark.parametrize(
    ("kwargs", "missing"),
    [
        ({}, "hydrator, dehydrator"),
        ({"hydrator": hydrate}, "missing: dehydrator"),
        ({"dehydrator": dehydrate}, "missing: hydrator"),
    ],
)
def test_aggregate_needs_hydrator_and_dehydrator(elm, kwargs, missing):
    program = elm.Program(init, update, **kwargs)
    store = elm.MemoryStore()
    with pytest.raises(TypeError, match=missing):
        program.aggregate(fetch_1_2_3, store, "k")
    assert store.load(None, "k") is None


@pytest.mark.parametrize(
    ("args", "kwargs", "named"),
    [
        ((5, update), {}, "init"),
        ((init, None), {}, "update"),
        ((init, update, 5), {}, "view"),
        ((init, update), {"hydrator": 5}, "hydrator"),
        ((init, update), {"dehydrator": b"x"}, "dehydrator"),
    ],
)
def test_bad_arguments(elm, args, kwargs, named):
    with pytest.raises(TypeError, match=named):
        elm.Program(*args, **kwargs)


def test_producer_and_consumer_are_keywords(elm):
    program = elm.Program(init, update)
    with elm.Buffer() as buffer, buffer.new_consumer() as consumer:
        with pytest.raises(TypeError):
            program.batch(fetch_1_2_3, buffer, consumer)  # type: ignore[misc]

"""supervise: restarts from the last committed model, dead letters (docs/supervise.md).

The model is a tuple of the messages applied so far, so a message applied twice,
or a failed tick's model kept, shows in the final model. Each program stops by
cancelling its context from the view once it has seen the model it waits for.
"""

from __future__ import annotations

import gc
import logging
import threading
import weakref
from typing import Any

import pytest
from _helpers import SAFETY

NO_WAIT = (0.0, 0.0)  # backoff: retry at once
NEVER = object()  # no message is this one


class Flaky(Exception):
    """A failure planted by a test."""


class Queue:
    """A Buffer and its consumer, wrapped so a test can fail a step of the tick
    of one message: ``current`` is the message being processed, None between ticks."""

    def __init__(self, elm: Any, *messages: Any) -> None:
        self.buffer = elm.Buffer()
        self.consumer = self.buffer.new_consumer()
        self.buffer.put(None, *messages)
        self.current: Any = None
        self.gets: list[Any] = []
        self.fail_put: Any = NEVER  # fail the put of this message's tick
        self.fail_commit: Any = NEVER
        self.left = 0  # failures still to plant

    def planted(self, message: Any, where: Any) -> bool:
        if where == message and self.left > 0:
            self.left -= 1
            return True
        return False

    def put(self, ctx: Any, *values: Any) -> None:
        if self.planted(self.current, self.fail_put):
            raise Flaky("put failed")
        self.buffer.put(ctx, *values)

    def get(self, ctx: Any) -> Any:
        message = self.consumer.get(ctx)
        self.current = message
        self.gets.append(message)
        return message

    def commit(self) -> None:
        if self.planted(self.current, self.fail_commit):
            raise Flaky("commit failed")
        self.consumer.commit()
        self.current = None

    def rollback(self) -> None:
        self.consumer.rollback()
        self.current = None

    def close(self) -> None:
        self.consumer.close()
        self.buffer.close()


class Tuples:
    """A program whose model is the tuple of messages applied; ``fail`` plants
    ``times`` failures at ``where`` in the tick of message ``at``."""

    def __init__(self, elm: Any, queue: Queue, stop_at: tuple[Any, ...]) -> None:
        self.queue = queue
        self.ctx = elm.Context(timeout=SAFETY * 4)
        self.stop_at = stop_at
        self.views: list[Any] = []
        self.where = ""
        self.at: Any = NEVER
        self.raised: list[Exception] = []
        self.inits = 0
        self.init_commands = 0

    def fail(self, where: str, at: Any, times: int) -> None:
        self.where, self.at = where, at
        self.queue.left = times
        if where == "put":
            self.queue.fail_put = at
        elif where == "commit":
            self.queue.fail_commit = at

    def maybe_fail(self, where: str, message: Any) -> None:
        if where == self.where and self.queue.planted(message, self.at):
            exc = Flaky(f"{where} failed on {message!r} (attempt {len(self.raised) + 1})")
            self.raised.append(exc)
            raise exc

    def init(self) -> tuple[Any, Any]:
        self.inits += 1

        def entry() -> None:
            self.init_commands += 1

        return (), [entry]

    def update(self, message: Any) -> Any:
        self.maybe_fail("update", message)

        def transform(model: tuple[Any, ...]) -> tuple[Any, Any]:
            self.maybe_fail("transform", message)
            return (*model, message), [lambda: self.maybe_fail("command", message)]

        return transform

    def view(self, model: tuple[Any, ...]) -> None:
        self.views.append(model)
        self.maybe_fail("view", self.queue.current)
        if model == self.stop_at:
            self.ctx.cancel()

    def supervise(self, elm: Any, **kwargs: Any) -> BaseException:
        kwargs.setdefault("backoff", NO_WAIT)
        with pytest.raises(BaseException) as caught:
            elm.supervise(
                self.init, self.update, self.view, self.queue, self.queue, ctx=self.ctx, **kwargs
            )
        return caught.value


@pytest.mark.parametrize("where", ["command", "view", "put", "commit"])
def test_a_failure_after_view_saw_the_new_model_is_applied_once(elm, where):
    queue = Queue(elm, 1, 2, 3)
    program = Tuples(elm, queue, stop_at=(1, 2, 3))
    program.fail(where, at=2, times=2)
    err = program.supervise(elm)
    assert err is program.ctx.err
    assert isinstance(err, elm.Canceled)
    # Each failed tick's view saw (1, 2); each restart shows (1,) again, the model
    # as of the last commit, and builds on it: never on the failed tick's model.
    assert program.views == [(), (1,), (1, 2), (1,), (1, 2), (1,), (1, 2), (1, 2, 3)]
    assert queue.gets == [1, 2, 2, 2, 3]
    assert program.inits == 1 and program.init_commands == 1  # never run again
    queue.close()


@pytest.mark.parametrize("where", ["update", "transform"])
def test_a_failure_before_view_is_retried_from_the_committed_model(elm, where):
    queue = Queue(elm, 1, 2, 3)
    program = Tuples(elm, queue, stop_at=(1, 2, 3))
    program.fail(where, at=2, times=2)
    assert program.supervise(elm) is program.ctx.err
    assert program.views == [(), (1,), (1,), (1,), (1, 2), (1, 2, 3)]
    assert queue.gets == [1, 2, 2, 2, 3]
    queue.close()


def test_a_failure_before_any_commit_restarts_from_the_initial_model(elm):
    queue = Queue(elm, 1, 2)
    program = Tuples(elm, queue, stop_at=(1, 2))
    program.fail("command", at=1, times=1)
    assert program.supervise(elm) is program.ctx.err
    assert program.views == [(), (1,), (), (1,), (1, 2)]
    assert program.inits == 1 and program.init_commands == 1
    queue.close()


def test_a_poison_message_is_dead_lettered_after_max_failures(elm, caplog):
    queue = Queue(elm, 1, "poison", 2, 3)
    program = Tuples(elm, queue, stop_at=(1, 2, 3))
    program.fail("update", at="poison", times=1000)  # it never succeeds
    letters: list[tuple[Any, BaseException]] = []
    with caplog.at_level(logging.WARNING, logger="elmstate"):
        err = program.supervise(
            elm, max_failures=3, on_dead_letter=lambda m, e: letters.append((m, e))
        )
    assert err is program.ctx.err
    assert len(program.raised) == 3  # exactly max_failures attempts
    assert letters == [("poison", program.raised[-1])]  # the last attempt's error
    assert letters[0][1] is program.raised[-1]
    # three attempts, then the read that dead-letters it
    assert queue.gets == [1, "poison", "poison", "poison", "poison", 2, 3]
    assert program.views[-1] == (1, 2, 3)  # everything after it applied
    records = [r for r in caplog.records if r.name == "elmstate"]
    assert [r.levelno for r in records] == [logging.WARNING] * 3 + [logging.ERROR]
    assert "attempt 3 of 3" in records[2].getMessage()
    # Only the error's type and place are logged: its text may quote data or secrets.
    assert "poison" not in caplog.text and "attempt 1)" not in caplog.text
    queue.close()


def test_without_on_dead_letter_the_poison_message_is_skipped(elm):
    queue = Queue(elm, "poison", 1)
    program = Tuples(elm, queue, stop_at=(1,))
    program.fail("command", at="poison", times=1000)
    assert program.supervise(elm, max_failures=2) is program.ctx.err
    assert len(program.raised) == 2
    assert program.views == [(), ("poison",), (), ("poison",), (), (1,)]
    queue.close()


def test_max_failures_one_dead_letters_at_the_first_failure(elm):
    queue = Queue(elm, "poison", 1)
    program = Tuples(elm, queue, stop_at=(1,))
    program.fail("transform", at="poison", times=1000)
    letters: list[Any] = []
    err = program.supervise(elm, max_failures=1, on_dead_letter=lambda m, e: letters.append(m))
    assert err is program.ctx.err
    assert len(program.raised) == 1 and letters == ["poison"]
    queue.close()


def test_a_tick_that_commits_resets_the_count(elm):
    # Each of two messages fails max_failures - 1 times: neither is dead-lettered.
    queue = Queue(elm, 1, 2)
    program = Tuples(elm, queue, stop_at=(1, 2))
    fails = {1: 2, 2: 2}

    def update(message: Any) -> Any:
        if fails[message]:
            fails[message] -= 1
            raise Flaky(message)
        return lambda model: ((*model, message), None)

    letters: list[Any] = []
    with pytest.raises(elm.Canceled):
        elm.supervise(
            program.init,
            update,
            program.view,
            queue,
            queue,
            ctx=program.ctx,
            max_failures=3,
            on_dead_letter=lambda m, e: letters.append(m),
            backoff=NO_WAIT,
        )
    assert letters == []
    assert program.views[-1] == (1, 2)
    queue.close()


def test_an_error_from_on_dead_letter_propagates_and_keeps_the_message(elm):
    queue = Queue(elm, "poison", 1)
    program = Tuples(elm, queue, stop_at=(1,))
    program.fail("update", at="poison", times=1000)
    refusal = LookupError("no dead-letter queue")

    def on_dead_letter(message: Any, exc: Exception) -> None:
        raise refusal

    assert program.supervise(elm, max_failures=2, on_dead_letter=on_dead_letter) is refusal
    assert not program.ctx.done
    assert queue.consumer.get(program.ctx) == "poison"  # rolled back: still at the head
    queue.close()


def test_a_base_exception_from_on_dead_letter_propagates(elm):
    queue = Queue(elm, "poison")
    program = Tuples(elm, queue, stop_at=("never",))
    program.fail("update", at="poison", times=1000)

    def on_dead_letter(message: Any, exc: Exception) -> None:
        raise KeyboardInterrupt

    err = program.supervise(elm, max_failures=1, on_dead_letter=on_dead_letter)
    assert type(err) is KeyboardInterrupt
    assert queue.consumer.get(program.ctx) == "poison"
    queue.close()


def test_ctx_ending_during_the_backoff_ends_it_at_once(elm):
    # A backoff of an hour: only a wait that ends with ctx lets the test finish
    # (the watchdog fails it otherwise).
    queue = Queue(elm, "poison")
    program = Tuples(elm, queue, stop_at=("never",))
    failed = threading.Event()

    def update(message: Any) -> Any:
        failed.set()
        raise Flaky("always")

    canceller = threading.Thread(target=lambda: failed.wait(SAFETY) and program.ctx.cancel())
    canceller.start()
    with pytest.raises(elm.Canceled) as caught:
        elm.supervise(
            program.init,
            update,
            program.view,
            queue,
            queue,
            ctx=program.ctx,
            backoff=(3600.0, 3600.0),
        )
    canceller.join()
    assert caught.value is program.ctx.err
    assert failed.is_set()
    queue.close()


def test_a_deadline_ends_it_with_ctx_err_not_a_retry(elm):
    # DeadlineExceeded is a TimeoutError: supervise tells it from a failing tick
    # by ctx.done, and a user's own TimeoutError is retried.
    buffer = elm.Buffer()
    consumer = buffer.new_consumer()
    buffer.put(None, "slow")
    ctx = elm.Context(timeout=0.5)
    timeouts: list[Any] = []

    def update(message: Any) -> Any:
        if not timeouts:
            timeouts.append(message)
            raise TimeoutError("the user's own")
        return lambda model: (model + 1, None)

    with pytest.raises(elm.DeadlineExceeded) as caught:
        elm.supervise(
            lambda: (0, None), update, lambda m: None, buffer, consumer, ctx=ctx, backoff=NO_WAIT
        )
    assert caught.value is ctx.err
    assert timeouts == ["slow"]
    assert buffer.diff(consumer) == 0  # the retry committed it
    buffer.close()


def test_an_ended_ctx_raises_before_anything_runs(elm):
    ctx = elm.Context()
    ctx.cancel()
    calls: list[str] = []
    buffer = elm.Buffer()
    with pytest.raises(elm.Canceled) as caught:
        elm.supervise(fn, fn, fn, buffer, buffer.new_consumer(), ctx=ctx, replay=calls.pop)
    assert caught.value is ctx.err
    assert calls == []
    buffer.close()


@pytest.mark.parametrize("where", ["init", "view", "command", "put"])
def test_a_failure_in_the_first_tick_propagates(elm, where):
    # Nothing to go back to: running init again, or going on without its
    # commands' messages, would break "init and its commands run once".
    queue = Queue(elm, 1)
    calls: list[str] = []
    failure = Flaky(where)

    def fail(step: str) -> None:
        calls.append(step)
        if step == where:
            raise failure

    def init() -> tuple[Any, Any]:
        fail("init")
        return (), [lambda: fail("command")]

    class Put:
        def put(self, ctx: Any, *values: Any) -> None:
            fail("put")

    with pytest.raises(Flaky) as caught:
        elm.supervise(init, lambda m: None, lambda m: fail("view"), Put(), queue, backoff=NO_WAIT)
    assert caught.value is failure
    assert calls == ["init", "view", "command", "put"][: calls.index(where) + 1]
    assert calls.count(where) == 1
    assert queue.gets == []
    queue.close()


def test_a_base_exception_in_a_tick_is_not_retried(elm):
    queue = Queue(elm, 1, 2)
    program = Tuples(elm, queue, stop_at=("never",))
    interrupt = KeyboardInterrupt()

    def update(message: Any) -> Any:
        raise interrupt

    with pytest.raises(KeyboardInterrupt) as caught:
        elm.supervise(program.init, update, program.view, queue, queue, backoff=NO_WAIT)
    assert caught.value is interrupt
    assert queue.gets == [1]
    assert queue.consumer.get(program.ctx) == 1  # rolled back
    queue.close()


class Reader:
    """A consumer whose ``get`` fails ``broken_gets`` times, and whose commit fails
    ``broken_commits`` times once it has read ``commit_fails_after``."""

    def __init__(self, consumer: Any, broken_gets: int = 0, broken_commits: int = 0) -> None:
        self.consumer = consumer
        self.broken_gets = broken_gets
        self.broken_commits = broken_commits
        self.last: Any = None
        self.commit_fails_after: Any = None

    def get(self, ctx: Any) -> Any:
        if self.broken_gets:
            self.broken_gets -= 1
            raise Flaky("get failed")
        self.last = self.consumer.get(ctx)
        return self.last

    def commit(self) -> None:
        if self.broken_commits and self.last == self.commit_fails_after:
            self.broken_commits -= 1
            raise Flaky("commit failed")
        self.consumer.commit()

    def rollback(self) -> None:
        self.consumer.rollback()


def summing(elm: Any, ctx: Any, reader: Any, buffer: Any, stop_at: int, **kwargs: Any) -> None:
    def view(model: int) -> None:
        if model == stop_at:
            ctx.cancel()

    def update(message: Any) -> Any:
        if message == "poison":
            raise Flaky("poison")
        return lambda model: (model + message, None)

    with pytest.raises(elm.Canceled):
        elm.supervise(
            lambda: (0, None), update, view, buffer, reader, ctx=ctx, backoff=NO_WAIT, **kwargs
        )


def test_a_failing_get_never_dead_letters_a_message(elm):
    # A consumer that cannot read (a broker down) fails attempts that read
    # nothing: they are retried, however many, and no healthy message is blamed.
    buffer = elm.Buffer()
    buffer.put(None, 1, 2)
    reader = Reader(buffer.new_consumer(), broken_gets=7)
    letters: list[Any] = []
    ctx = elm.Context(timeout=SAFETY * 4)
    summing(
        elm, ctx, reader, buffer, 3, max_failures=2, on_dead_letter=lambda m, e: letters.append(m)
    )
    assert letters == []
    assert reader.broken_gets == 0
    buffer.close()


def test_a_failed_dead_letter_commit_is_retried(elm):
    # The dead letter is at-least-once: its commit failed, so on_dead_letter is
    # called again with the same message once the backoff has passed.
    buffer = elm.Buffer()
    buffer.put(None, "poison", 1)
    reader = Reader(buffer.new_consumer(), broken_commits=1)
    reader.commit_fails_after = "poison"
    letters: list[Any] = []
    ctx = elm.Context(timeout=SAFETY * 4)
    summing(
        elm, ctx, reader, buffer, 1, max_failures=2, on_dead_letter=lambda m, e: letters.append(m)
    )
    assert letters == ["poison", "poison"]
    assert reader.broken_commits == 0
    buffer.close()


def fn(*args: Any) -> None:
    return None


@pytest.mark.parametrize(
    ("kwargs", "error", "named"),
    [
        ({"max_failures": 0}, ValueError, "max_failures"),
        ({"max_failures": -1}, ValueError, "max_failures"),
        ({"max_failures": True}, TypeError, "max_failures"),
        ({"max_failures": 1.0}, TypeError, "max_failures"),
        ({"max_failures": "3"}, TypeError, "max_failures"),
        ({"max_failures": None}, TypeError, "max_failures"),
        ({"backoff": (1.0, 0.5)}, ValueError, "backoff"),
        ({"backoff": (-1.0, 1.0)}, ValueError, "backoff"),
        ({"backoff": (0.0, float("inf"))}, ValueError, "backoff"),
        ({"backoff": (0.0, float("nan"))}, ValueError, "backoff"),
        ({"backoff": 1.0}, TypeError, "backoff"),
        ({"backoff": (1.0,)}, TypeError, "backoff"),
        ({"backoff": (0.0, 1.0, 2.0)}, TypeError, "backoff"),
        ({"backoff": ("0", 1.0)}, TypeError, "backoff"),
        ({"backoff": (False, 1.0)}, TypeError, "backoff"),
        ({"backoff": None}, TypeError, "backoff"),
        ({"on_dead_letter": 5}, TypeError, "on_dead_letter"),
        ({"replay": 5}, TypeError, "replay"),
        ({"ctx": 5}, TypeError, "ctx"),
    ],
)
def test_bad_keywords(elm, kwargs, error, named):
    calls: list[Any] = []

    def init() -> tuple[Any, Any]:
        calls.append("init")
        return 0, None

    buffer = elm.Buffer()
    with pytest.raises(error, match=named):
        elm.supervise(init, fn, fn, buffer, buffer.new_consumer(), **kwargs)
    assert calls == []
    buffer.close()


@pytest.mark.parametrize("named", ["init", "update", "view", "producer", "consumer"])
def test_bad_positionals(elm, named):
    buffer = elm.Buffer()
    args = {"init": fn, "update": fn, "view": fn, "producer": buffer}
    args["consumer"] = buffer.new_consumer()
    args[named] = 5
    with pytest.raises(TypeError, match=named):
        elm.supervise(*args.values())
    buffer.close()


def test_backoff_bounds_are_accepted(elm):
    # lo == hi and a list: both fine; the program ends at once (ctx ended).
    ctx = elm.Context()
    ctx.cancel()
    buffer = elm.Buffer()
    for backoff in ((0.5, 0.5), [0, 2], (0, 0)):
        with pytest.raises(elm.Canceled):
            elm.supervise(fn, fn, fn, buffer, buffer.new_consumer(), ctx=ctx, backoff=backoff)
    buffer.close()


def test_a_failure_is_not_kept_once_a_tick_commits(elm):
    # The error's frames hold models: once a tick succeeds, supervise lets it go.
    queue = Queue(elm, 1, 2)
    refs: list[Any] = []
    alive: list[bool] = []
    ctx = elm.Context(timeout=SAFETY * 4)

    def update(message: Any) -> Any:
        if message == 1 and not refs:
            failure = Flaky("once")
            refs.append(weakref.ref(failure))
            raise failure
        return lambda model: ((*model, message), None)

    def view(model: tuple[Any, ...]) -> None:
        if model == (1, 2):  # the tick of 1 has committed
            gc.collect()
            alive.append(refs[0]() is not None)
            ctx.cancel()

    with pytest.raises(elm.Canceled):
        elm.supervise(lambda: ((), None), update, view, queue, queue, ctx=ctx, backoff=NO_WAIT)
    assert alive == [False]
    queue.close()


def test_a_full_bounded_buffer_never_stalls_the_supervised_loop(elm):
    # The loop's own puts (a restart's too, and the dead-letter read on the same
    # thread) never wait on a buffer that it reads, wrapped as supervise wraps it.
    buffer = elm.Buffer(maxsize=2)
    consumer = buffer.new_consumer()
    buffer.put(None, 3, "poison")  # full
    ctx = elm.Context(timeout=SAFETY * 4)
    failed: list[Any] = []
    letters: list[Any] = []

    def update(message: Any) -> Any:
        if message == "poison":
            raise Flaky("poison")
        if message == 2 and not failed:
            failed.append(message)
            raise Flaky("once")
        # each n > 0 produces n - 1 twice: more than the buffer holds
        more = elm.new_command(message - 1, message - 1) if message > 0 else None
        return lambda model: (model + 1, more)

    def view(model: int) -> None:
        if model == 15:  # 3, then two 2s, four 1s and eight 0s
            ctx.cancel()

    with pytest.raises(elm.Canceled) as caught:
        elm.supervise(
            lambda: (0, None),
            update,
            view,
            buffer,
            consumer,
            ctx=ctx,
            max_failures=2,
            on_dead_letter=lambda m, e: letters.append(m),
            backoff=NO_WAIT,
        )
    assert type(caught.value) is elm.Canceled  # cancelled by the view, not timed out
    assert letters == ["poison"]
    assert failed == [2]
    buffer.close()

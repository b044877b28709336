"""batch — drain, return the last model, errors, cancellation, no stray threads
(docs/contract.md#batch)."""

from __future__ import annotations

import threading
import time

import pytest
from _helpers import buffer_pair
from _recording import live_threads, vid

# run, batch and aggregate run through elmstate.aio too (asyncio, uvloop): tests/_modes.py
AIO_MODES = True


def pages(*batches):
    """A fetcher returning each (messages, more) pair in turn; records its calls."""
    replies = list(batches)
    calls: list = []

    def fetcher(ctx):
        calls.append(ctx)
        return replies.pop(0)

    fetcher.calls = calls
    return fetcher


class Summer:
    """Sums int messages; ``children[m]`` lists the messages that m's command produces."""

    def __init__(self, children=None):
        self.children = children or {}
        self.updates: list = []
        self.views: list = []

    def init(self):
        return 0, None

    def update(self, message):
        self.updates.append(message)

        def transform(model):
            return model + message, elm_command(self.children.get(message, ()))

        return transform

    def view(self, model):
        self.views.append(model)


def elm_command(messages):
    return [lambda m=m: m for m in messages]


@pytest.fixture(params=["thread", "inline"])
def feed(request):
    """Where the fetcher runs: the rules of these tests hold for both."""
    return request.param


def run_batch(elm, fetcher, program=None, **kwargs):
    program = program if program is not None else Summer()
    buf, consumer = buffer_pair(elm)
    kwargs.setdefault("ctx", elm.Context(timeout=5))  # safety net
    result = elm.batch(program.init, program.update, program.view, buf, consumer, fetcher, **kwargs)
    return result, program


def test_returns_last_model(elm, feed):
    result, program = run_batch(elm, pages(([1, 2, 3], False)), feed=feed)
    assert result == 6
    assert program.views == [0, 1, 3, 6]
    assert program.updates == [1, 2, 3]


def test_returns_the_model_object_the_last_view_saw(elm, feed):
    buf, consumer = buffer_pair(elm)
    seen: list = []

    def update(message):
        return lambda model: ([*model, message], None)

    result = elm.batch(
        lambda: ([], None),
        update,
        seen.append,
        buf,
        consumer,
        pages((["a", "b"], False)),
        feed=feed,
    )
    assert result == ["a", "b"]
    assert result is seen[-1]


def test_empty_input_returns_init_model(elm, feed):
    result, program = run_batch(elm, pages(([], False)), feed=feed)
    assert result == 0
    assert program.views == [0]
    assert program.updates == []


def test_init_commands_processed_before_return(elm, feed):
    buf, consumer = buffer_pair(elm)
    program = Summer()
    result = elm.batch(
        lambda: (0, elm.new_command(10, 20)),
        program.update,
        program.view,
        buf,
        consumer,
        pages(([], False)),
        ctx=elm.Context(timeout=5),
        feed=feed,
    )
    assert result == 30
    assert sorted(program.updates) == [10, 20]


def test_drains_command_chains_several_levels_deep(elm, feed):
    # 1 -> (2, 3); 2 -> (4,); 3 -> (5, 6); 4 -> (7,); 7 -> (8,): five levels from 1
    children = {1: (2, 3), 2: (4,), 3: (5, 6), 4: (7,), 7: (8,), 100: (101,)}
    result, program = run_batch(
        elm, pages(([1], True), ([100], False)), program=Summer(children), feed=feed
    )
    expected = [1, 2, 3, 4, 5, 6, 7, 8, 100, 101]
    assert sorted(program.updates) == expected
    assert result == sum(expected)
    assert program.views[-1] == result


def test_drains_a_long_self_feeding_chain(elm, feed):
    # each message n > 0 produces n - 1: the queue refills on every tick
    children = {n: (n - 1,) for n in range(1, 200)}
    result, program = run_batch(elm, pages(([199], False)), program=Summer(children), feed=feed)
    assert program.updates == list(range(199, -1, -1))
    assert result == sum(range(200))


def test_end_marker_never_reaches_update_or_view(elm, feed):
    result, program = run_batch(elm, pages(([1], True), ([], True), ([2], False)), feed=feed)
    assert program.updates == [1, 2]
    assert program.views == [0, 1, 3]
    assert result == 3


def test_fetcher_called_until_more_false(elm, feed):
    fetcher = pages(([1, 2], True), ([3], True), ([], True), ((4, 5), False), ([99], True))
    result, program = run_batch(elm, fetcher, feed=feed)
    assert len(fetcher.calls) == 4
    assert program.updates == [1, 2, 3, 4, 5]
    assert result == 15


def test_fetcher_gets_a_context(elm, feed):
    fetcher = pages(([1], True), ([2], False))
    run_batch(elm, fetcher, ctx=None, feed=feed)
    assert len(fetcher.calls) == 2
    assert all(isinstance(ctx, elm.Context) for ctx in fetcher.calls)


@pytest.mark.parametrize(
    "make, expected",
    [
        (lambda: None, []),
        (lambda: (), []),
        (lambda: [], []),
        (lambda: (7, 8), [7, 8]),
        (lambda: [7, 8], [7, 8]),
        (lambda: iter([7, 8]), [7, 8]),
        (lambda: (m for m in (7, 8)), [7, 8]),
        (lambda: range(7, 9), [7, 8]),
    ],
    ids=["None", "empty tuple", "empty list", "tuple", "list", "iterator", "generator", "range"],
)
def test_fetcher_message_shapes(elm, feed, make, expected):
    result, program = run_batch(elm, pages((make(), False)), feed=feed)
    assert program.updates == expected
    assert result == sum(expected)


def test_fetcher_pair_may_be_a_list(elm, feed):
    result, program = run_batch(elm, pages([[1, 2], True], [[3], False]), feed=feed)
    assert program.updates == [1, 2, 3]


def test_none_messages_skip_update(elm, feed):
    result, program = run_batch(elm, pages(([None, 1, None], False)), feed=feed)
    assert program.updates == [1]
    assert program.views == [0, 0, 1, 1]


def test_replay_skips_commands_in_batch(elm, feed):
    result, program = run_batch(
        elm, pages(([1], False)), program=Summer({1: (2,)}), replay=lambda: True, feed=feed
    )
    assert program.updates == [1]
    assert result == 1


def test_fetcher_error_is_raised(elm):
    boom = RuntimeError("fetch failed")
    calls: list = []

    def fetcher(ctx):
        calls.append(1)
        if len(calls) == 2:
            raise boom
        return [1], True

    before = live_threads()
    with pytest.raises(RuntimeError) as info:
        run_batch(elm, fetcher)
    assert info.value is boom
    assert live_threads() == before
    assert len(calls) == 2


def test_feeder_put_error_is_raised(elm):
    boom = RuntimeError("put failed")
    buf, consumer = buffer_pair(elm)

    class Producer:
        def put(self, ctx, *values):
            if 13 in values:
                raise boom
            buf.put(ctx, *values)

    program = Summer()
    with pytest.raises(RuntimeError) as info:
        elm.batch(
            program.init,
            program.update,
            program.view,
            Producer(),
            consumer,
            pages(([1], True), ([13], True), ([2], False)),
            ctx=elm.Context(timeout=5),
        )
    assert info.value is boom
    assert 2 not in program.updates


def test_loop_error_is_raised_and_feeder_stopped(elm):
    boom = ValueError("update failed")
    calls: list = []

    def fetcher(ctx):  # endless input that respects ctx
        calls.append(1)
        ctx.wait(0.001)
        return [1], True

    def update(message):
        if len(calls) >= 3:
            raise boom
        return None

    buf, consumer = buffer_pair(elm)
    before = live_threads()
    with pytest.raises(ValueError) as info:
        elm.batch(
            lambda: (0, None),
            update,
            lambda m: None,
            buf,
            consumer,
            fetcher,
            ctx=elm.Context(timeout=5),
        )
    assert info.value is boom
    assert live_threads() == before
    stopped_at = len(calls)
    time.sleep(0.02)
    assert len(calls) == stopped_at  # the feeder does not go on after the call


@pytest.mark.sync_only  # update blocks until the feeder fails: a thread, not a task
def test_loop_error_wins_when_both_fail(elm):
    loop_error = ValueError("update failed")
    feeder_error = RuntimeError("fetch failed")
    feeder_ctx: list = []
    in_update = threading.Event()

    def fetcher(ctx):
        feeder_ctx.append(ctx)
        if len(feeder_ctx) == 1:
            return [1], True
        in_update.wait(5)
        raise feeder_error  # fails first: this cancels the loop's context

    def update(message):
        in_update.set()
        # wait until the feeder's failure has cancelled the loop, then fail too
        assert feeder_ctx[0].wait(5)
        raise loop_error

    buf, consumer = buffer_pair(elm)
    with pytest.raises(Exception) as info:
        elm.batch(
            lambda: (0, None),
            update,
            lambda m: None,
            buf,
            consumer,
            fetcher,
            ctx=elm.Context(timeout=5),
        )
    assert info.value is loop_error


def test_loop_error_wins_when_feeder_fails_after(elm):
    loop_error = ValueError("update failed")
    feeder_error = RuntimeError("fetch failed")
    failing = threading.Event()

    def fetcher(ctx):
        if not failing.is_set():
            failing.wait(5)
            time.sleep(0.01)
            return [], True
        raise feeder_error

    def update(message):
        failing.set()
        raise loop_error

    buf, consumer = buffer_pair(elm)
    with pytest.raises(Exception) as info:
        elm.batch(
            lambda: (0, elm.new_command(1)),
            update,
            lambda m: None,
            buf,
            consumer,
            fetcher,
            ctx=elm.Context(timeout=5),
        )
    assert info.value is loop_error


def test_caller_cancel_after_feeder_finished(elm):
    """The feeder is done; the loop is still busy: a cancel still fails the batch."""
    ctx = elm.Context(elm.Context(timeout=5))
    entered = threading.Event()
    release = threading.Event()

    def slow():
        entered.set()
        release.wait(5)
        return None

    def update(message):
        return lambda model: (model + message, [slow])

    def canceller():
        entered.wait(5)
        time.sleep(0.02)  # the feeder has long put its end marker
        ctx.cancel()
        release.set()

    thread = threading.Thread(target=canceller)
    thread.start()
    buf, consumer = buffer_pair(elm)
    before = live_threads() - {thread}
    try:
        with pytest.raises(elm.Canceled) as info:
            elm.batch(
                lambda: (0, None),
                update,
                lambda m: None,
                buf,
                consumer,
                pages(([1], False)),
                ctx=ctx,
            )
    finally:
        thread.join()
    assert info.value is ctx.err
    assert type(info.value) is elm.Canceled
    assert live_threads() == before


def test_caller_cancel_while_fetcher_waits(elm):
    ctx = elm.Context(elm.Context(timeout=5))
    waiting = threading.Event()

    def fetcher(fctx):  # blocks until its context ends, then reports it
        waiting.set()
        fctx.wait(5)
        raise fctx.err or AssertionError("fetcher context did not end")

    def cancel_when_waiting():
        waiting.wait(5)
        ctx.cancel()

    thread = threading.Thread(target=cancel_when_waiting)
    thread.start()
    before = live_threads() - {thread}
    start = time.monotonic()
    try:
        with pytest.raises(elm.Canceled) as info:
            run_batch(elm, fetcher, ctx=ctx)
    finally:
        thread.join()
    assert time.monotonic() - start < 2.5
    assert type(info.value) is elm.Canceled  # not a DeadlineExceeded from the safety net
    assert type(ctx.err) is elm.Canceled
    assert live_threads() == before


def test_caller_cancel_raises_callers_err_even_if_feeder_put_failed(elm):
    """When the caller's ctx ends, *its* err is raised (docs/contract.md#errors-and-cancellation).

    Here the caller cancels while the loop is busy; the feeder's next put (into the
    Buffer, with the batch's inner context) then fails with the inner context's
    Canceled. That failure is only a consequence of the caller's cancel, so the
    caller's own ctx.err must come out, not the inner context's error.
    """
    ctx = elm.Context(elm.Context(timeout=5))
    feeder_put = threading.Event()
    calls: list = []

    def fetcher(fctx):
        calls.append(1)
        if len(calls) == 1:
            return [1], True
        ctx.cancel()
        fctx.wait(5)
        feeder_put.set()
        return [2], True  # the feeder's put of this raises the inner ctx's err

    def update(message):
        feeder_put.wait(5)
        time.sleep(0.05)  # let the feeder record its failure first
        return None

    buf, consumer = buffer_pair(elm)
    with pytest.raises(elm.Canceled) as info:
        elm.batch(lambda: (0, None), update, lambda m: None, buf, consumer, fetcher, ctx=ctx)
    assert type(info.value) is elm.Canceled
    assert info.value is ctx.err


def test_deadline_with_endless_fetcher(elm):
    ctx = elm.Context(timeout=0.1)

    def fetcher(fctx):  # more=True forever, but respects its ctx
        fctx.wait(0.001)
        return [1], True

    before = live_threads()
    start = time.monotonic()
    with pytest.raises(elm.DeadlineExceeded):
        run_batch(elm, fetcher, ctx=ctx)
    assert time.monotonic() - start < 2.0
    assert type(ctx.err) is elm.DeadlineExceeded
    assert live_threads() == before


def test_already_cancelled_ctx(elm):
    ctx = elm.Context()
    ctx.cancel()
    calls: list = []
    program = Summer()
    before = live_threads()
    with pytest.raises(elm.Canceled) as info:
        run_batch(elm, lambda c: calls.append(1) or ([1], False), program=program, ctx=ctx)
    assert info.value is ctx.err
    assert program.views == []
    assert live_threads() == before


@pytest.mark.parametrize("outcome", ["success", "loop error", "fetcher error", "cancel"])
def test_no_thread_outlives_the_call(elm, outcome):
    ctx = elm.Context(timeout=5)
    if outcome == "cancel":
        ctx.cancel()

    def fetcher(fctx):
        if outcome == "fetcher error":
            raise KeyError("fetch")
        return [1], False

    def update(message):
        if outcome == "loop error":
            raise LookupError("loop")
        return None

    buf, consumer = buffer_pair(elm)
    before = live_threads()
    try:
        elm.batch(lambda: (0, None), update, lambda m: None, buf, consumer, fetcher, ctx=ctx)
    except (LookupError, elm.Canceled):
        assert outcome != "success"
    else:
        assert outcome == "success"
    assert live_threads() == before


@pytest.mark.parametrize(
    "reply",
    [
        None,
        5,
        "ab",
        ([1],),
        ([1], True, 3),
        [[1], True, 3],
        "xy",
        ("ab", False),
        (5, False),
        (b"ab", True),
        (1.5, False),
        (object(), False),
    ],
    ids=vid,
)
def test_bad_fetcher_reply(elm, reply):
    before = live_threads()
    with pytest.raises(TypeError, match="fetcher"):
        run_batch(elm, lambda ctx: reply)
    assert live_threads() == before

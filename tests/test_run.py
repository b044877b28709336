"""run (docs/contract.md#run) — the order of a tick, commits, rollbacks and cancellation."""

from __future__ import annotations

import threading
import time

import pytest
from _helpers import buffer_pair
from _recording import FakeQueue, Program, Recorder, Stop

# run, batch and aggregate run through elmstate.aio too (asyncio, uvloop): tests/_modes.py
AIO_MODES = True

# The whole log of a run over the script [1, 2] with Program: three ticks, then the
# fourth get raises Stop (so that tick rolls back).
FULL_LOG = [
    ("init",),
    ("view", 0),
    ("command", "init"),
    ("put", (("from", "init"),)),
    ("get",),
    ("update", 1),
    ("transform", 1, 0),
    ("view", 1),
    ("command", 1),
    ("put", (("from", 1),)),
    ("commit",),
    ("get",),
    ("update", 2),
    ("transform", 2, 1),
    ("view", 3),
    ("command", 2),
    ("put", (("from", 2),)),
    ("commit",),
    ("get",),
    ("rollback",),
]


def run_fake(elm, script, *, rec=None, program=None, **kwargs):
    """Run Program over a FakeQueue; returns (recorder, raised exception, queue)."""
    rec = rec if rec is not None else Recorder()
    program = program if program is not None else Program(rec)
    queue = FakeQueue(rec, script)
    with pytest.raises(BaseException) as info:
        elm.run(program.init, program.update, program.view, queue, queue, **kwargs)
    return rec, info.value, queue


def test_tick_order(elm):
    rec, exc, _ = run_fake(elm, [1, 2])
    assert isinstance(exc, Stop)
    assert rec.calls == FULL_LOG


def test_protocol_methods_get_a_context_never_none(elm):
    _, _, queue = run_fake(elm, [1])
    assert len(queue.contexts) == 4  # put, get, put, get
    assert all(isinstance(ctx, elm.Context) for ctx in queue.contexts)


def test_none_message_skips_update_but_ticks(elm):
    rec, exc, _ = run_fake(elm, [None, 5])
    assert isinstance(exc, Stop)
    assert rec.calls == [
        ("init",),
        ("view", 0),
        ("command", "init"),
        ("put", (("from", "init"),)),
        ("get",),
        ("view", 0),
        ("put", ()),
        ("commit",),
        ("get",),
        ("update", 5),
        ("transform", 5, 0),
        ("view", 5),
        ("command", 5),
        ("put", (("from", 5),)),
        ("commit",),
        ("get",),
        ("rollback",),
    ]


def test_none_transform_leaves_model_and_no_command(elm):
    rec, _, _ = run_fake(elm, [3, "ignore"])
    assert rec.calls[11:] == [
        ("get",),
        ("update", "ignore"),
        ("view", 3),
        ("put", ()),
        ("commit",),
        ("get",),
        ("rollback",),
    ]


@pytest.mark.parametrize(
    "command, produced",
    [
        (None, ()),
        ([], ()),
        ([None, None], ()),
        ([lambda: None], ()),
        ([lambda: None, None, lambda: "a", lambda: None, lambda: "b"], ("a", "b")),
        ((lambda: 0, lambda: False, lambda: ""), (0, False, "")),  # falsy is not None
    ],
)
def test_command_shapes_and_put_always_called(elm, command, produced):
    rec = Recorder()

    def init():
        rec.record("init")
        return "m", command

    queue = FakeQueue(rec, [])
    with pytest.raises(Stop):
        elm.run(init, lambda m: None, lambda m: rec.record("view", m), queue, queue)
    assert rec.calls == [("init",), ("view", "m"), ("put", produced), ("get",), ("rollback",)]


def test_command_may_be_any_iterable(elm):
    rec = Recorder()
    queue = FakeQueue(rec, [])
    gen = (f for f in [lambda: 1, None, lambda: 2])
    with pytest.raises(Stop):
        elm.run(lambda: (0, gen), lambda m: None, lambda m: None, queue, queue)
    assert rec.calls[0] == ("put", (1, 2))


def test_commands_called_in_order_each_once(elm):
    rec = Recorder()

    def entry(n):
        return lambda: rec.record("command", n) or n

    queue = FakeQueue(rec, [])
    with pytest.raises(Stop):
        elm.run(
            lambda: (0, [entry(i) for i in range(5)]), lambda m: None, lambda m: None, queue, queue
        )
    assert rec.calls[:6] == [("command", i) for i in range(5)] + [("put", (0, 1, 2, 3, 4))]


def test_replay_false_runs_commands_and_is_consulted_each_tick(elm):
    rec = Recorder()
    program = Program(rec, replay=lambda: False)
    rec, exc, _ = run_fake(elm, [1, 2], rec=rec, program=program, replay=program.replay)
    expected = []
    for call in FULL_LOG:
        if call[0] == "view":
            expected += [call, ("replay",)]
        else:
            expected.append(call)
    assert rec.calls == expected


def test_replay_true_skips_commands(elm):
    rec = Recorder()
    answers = iter([True, True, False])  # replaying, replaying, live
    program = Program(rec, replay=lambda: next(answers))
    rec, exc, _ = run_fake(elm, [1, 2], rec=rec, program=program, replay=program.replay)
    assert isinstance(exc, Stop)
    assert rec.calls == [
        ("init",),
        ("view", 0),
        ("replay",),
        ("put", ()),
        ("get",),
        ("update", 1),
        ("transform", 1, 0),
        ("view", 1),
        ("replay",),
        ("put", ()),
        ("commit",),
        ("get",),
        ("update", 2),
        ("transform", 2, 1),
        ("view", 3),
        ("replay",),
        ("command", 2),
        ("put", (("from", 2),)),
        ("commit",),
        ("get",),
        ("rollback",),
    ]


def test_replay_truthy_value_skips_commands(elm):
    rec = Recorder()
    queue = FakeQueue(rec, [])
    with pytest.raises(Stop):
        elm.run(
            lambda: (0, [lambda: rec.record("command") or "x"]),
            lambda m: None,
            lambda m: None,
            queue,
            queue,
            replay=lambda: 1,
        )
    assert rec.calls == [("put", ()), ("get",), ("rollback",)]


def prefix_through(log, name, nth):
    """``log`` up to and including the ``nth`` entry named ``name``."""
    seen = 0
    for i, call in enumerate(log):
        if call[0] == name:
            seen += 1
            if seen == nth:
                return log[: i + 1]
    raise AssertionError(f"no {name} #{nth} in the log")


# The second message's tick (the third tick): each point at which it can fail.
LATER_TICK_POINTS = [
    ("get", 2),
    ("update", 2),
    ("transform", 2),
    ("view", 3),
    ("command", 3),
    ("put", 3),
    ("commit", 2),
]


@pytest.mark.parametrize("name, nth", LATER_TICK_POINTS + [("get", 1), ("commit", 1)])
def test_failure_in_later_tick_rolls_back_once(elm, name, nth):
    rec = Recorder()
    boom = rec.fail(name, nth)
    rec, exc, _ = run_fake(elm, [1, 2], rec=rec)
    assert exc is boom
    assert rec.calls == prefix_through(FULL_LOG, name, nth) + [("rollback",)]


@pytest.mark.parametrize("name", ["init", "view", "command", "put"])
def test_failure_in_first_tick_never_rolls_back(elm, name):
    rec = Recorder()
    boom = rec.fail(name, 1)
    rec, exc, _ = run_fake(elm, [1, 2], rec=rec)
    assert exc is boom
    assert rec.calls == prefix_through(FULL_LOG, name, 1)
    assert ("rollback",) not in rec.calls and ("commit",) not in rec.calls


def test_replay_failure_rolls_back(elm):
    rec = Recorder()
    boom = rec.fail("replay", 2)
    program = Program(rec, replay=lambda: False)
    rec, exc, _ = run_fake(elm, [1], rec=rec, program=program, replay=program.replay)
    assert exc is boom
    assert rec.calls[-3:] == [("view", 1), ("replay",), ("rollback",)]


def test_base_exception_also_rolls_back(elm):
    rec = Recorder()
    boom = rec.fail("update", 1, KeyboardInterrupt())
    rec, exc, _ = run_fake(elm, [1], rec=rec)
    assert exc is boom
    assert rec.calls[-3:] == [("get",), ("update", 1), ("rollback",)]


def test_rollback_error_is_suppressed(elm):
    rec = Recorder()
    boom = rec.fail("update", 1)
    rec.fail("rollback", 1, ValueError("rollback broke"))
    rec, exc, _ = run_fake(elm, [1], rec=rec)
    assert exc is boom
    assert rec.calls[-3:] == [("get",), ("update", 1), ("rollback",)]


def test_ctx_cancelled_before_start(elm):
    ctx = elm.Context()
    ctx.cancel()
    rec, exc, _ = run_fake(elm, [1], ctx=ctx)
    assert exc is ctx.err
    assert rec.calls == []


def test_ctx_deadline_before_start(elm):
    ctx = elm.Context(timeout=0)
    rec, exc, _ = run_fake(elm, [1], ctx=ctx)
    assert exc is ctx.err
    assert type(exc) is elm.DeadlineExceeded
    assert rec.calls == []


def test_ctx_cancelled_mid_run_raises_at_next_tick(elm):
    rec = Recorder()
    ctx = elm.Context()
    program = Program(rec)
    update = program.update

    def cancelling_update(message):
        if message == 2:
            ctx.cancel()
        return update(message)

    program.update = cancelling_update
    queue = FakeQueue(rec, [1, 2, 3])
    with pytest.raises(elm.Canceled) as info:
        elm.run(program.init, program.update, program.view, queue, queue, ctx=ctx)
    assert info.value is ctx.err
    # the cancelling tick completes and commits; no further get, no rollback
    assert rec.calls == FULL_LOG[:-2]


def test_ctx_cancelled_in_first_tick(elm):
    rec = Recorder()
    ctx = elm.Context()
    queue = FakeQueue(rec, [1])

    def init():
        ctx.cancel()
        return 0, None

    with pytest.raises(elm.Canceled) as info:
        elm.run(init, lambda m: None, lambda m: rec.record("view", m), queue, queue, ctx=ctx)
    assert info.value is ctx.err
    assert rec.calls == [("view", 0), ("put", ())]


@pytest.mark.parametrize("how", ["cancel", "deadline"])
def test_ctx_ends_while_blocked_in_buffer_get(elm, how):
    buf, consumer = buffer_pair(elm)
    views: list = []
    if how == "deadline":
        ctx = elm.Context(timeout=0.1)
        timer = None
    else:
        ctx = elm.Context(elm.Context(timeout=5))  # safety net
        timer = threading.Timer(0.1, ctx.cancel)
        timer.start()
    start = time.monotonic()
    try:
        with pytest.raises(elm.Canceled) as info:
            elm.run(lambda: (0, None), lambda m: None, views.append, buf, consumer, ctx=ctx)
        elapsed = time.monotonic() - start
    finally:
        if timer is not None:
            timer.join()
    assert info.value is ctx.err
    assert type(info.value) is (elm.DeadlineExceeded if how == "deadline" else elm.Canceled)
    assert views == [0]
    assert elapsed < 1.5  # 0.1 s, give or take a noisy machine; not the 5 s safety net
    assert buf.slice() == []


def test_blocked_get_wakes_promptly(elm):
    buf, consumer = buffer_pair(elm)
    ctx = elm.Context(elm.Context(timeout=5))
    cancelled: list[float] = []

    def cancel_later():
        time.sleep(0.05)
        cancelled.append(time.monotonic())
        ctx.cancel()

    thread = threading.Thread(target=cancel_later)
    thread.start()
    try:
        with pytest.raises(elm.Canceled):
            elm.run(lambda: (0, None), lambda m: None, lambda m: None, buf, consumer, ctx=ctx)
        returned = time.monotonic()
    finally:
        thread.join()
    assert type(ctx.err) is elm.Canceled
    assert returned - cancelled[0] < 0.5


def test_buffer_messages_from_commands_are_processed(elm):
    buf, consumer = buffer_pair(elm)
    ctx = elm.Context(elm.Context(timeout=5))
    views: list = []
    seen: list = []

    def update(n):
        seen.append(n)

        def transform(model):
            if n == 4:
                ctx.cancel()
                return model + [n], None
            return model + [n], elm.new_command(n + 1, None, -(n + 1))

        return transform if n > 0 else None

    with pytest.raises(elm.Canceled) as info:
        elm.run(lambda: ([], elm.new_command(1)), update, views.append, buf, consumer, ctx=ctx)
    assert info.value is ctx.err
    assert seen == [1, 2, -2, 3, -3, 4]
    assert views == [[], [1], [1, 2], [1, 2], [1, 2, 3], [1, 2, 3], [1, 2, 3, 4]]
    # the last tick's put raised ctx.err, so it rolled back: 4 is read again
    safety = elm.Context(timeout=2)
    assert [consumer.get(safety), consumer.get(safety)] == [4, -4]


def test_buffer_rollback_redelivers(elm):
    buf, consumer = buffer_pair(elm)
    buf.put(None, "a", "b")
    seen: list = []

    def update(message):
        seen.append(message)
        if message == "b":
            raise Stop

    with pytest.raises(Stop):
        elm.run(lambda: (0, None), update, lambda m: None, buf, consumer)
    # "a" was committed, "b" rolled back: a new run reads "b" again
    ctx = elm.Context(timeout=0.2)
    with pytest.raises(elm.DeadlineExceeded):
        elm.run(lambda: (0, None), seen.append, lambda m: None, buf, consumer, ctx=ctx)
    assert seen == ["a", "b", "b"]

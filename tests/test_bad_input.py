"""Wrong types and shapes at every public entry point: TypeError/ValueError naming the argument.

For run, batch and aggregate the error must come before any callback, producer,
consumer or store method was called.
"""

from __future__ import annotations

import math
import threading

import pytest
from _recording import FakeQueue, Recorder, vid

# run, batch and aggregate run through elmstate.aio too (asyncio, uvloop): tests/_modes.py
AIO_MODES = True


def fn(*args):
    return None


class NoPut:
    def get(self, ctx):
        return None

    def commit(self):
        pass

    def rollback(self):
        pass


class PutNotCallable(NoPut):
    put = 5


class Methods:
    """An object with the named methods, each a no-op."""

    def __init__(self, *names):
        for name in names:
            setattr(self, name, fn)


BAD_CALLABLE = [None, 1, "f", b"f", [fn], object()]
BAD_PRODUCER = [None, 1, "p", object(), NoPut(), PutNotCallable(), Methods("get", "commit")]
BAD_CONSUMER = [
    None,
    1,
    "c",
    object(),
    Methods("put"),
    Methods("get", "commit"),
    Methods("get", "rollback"),
    Methods("commit", "rollback"),
    Methods("put", "get", "commit"),
]
BAD_CTX = ["ctx", 1, 0.5, object(), threading.Event()]
BAD_OPTIONAL_CALLABLE = [1, "r", True, object()]
BAD_STORE = [None, 1, object(), Methods("load"), Methods("store"), Methods("get", "put")]
BAD_KEY = [None, 1, b"k", ("k",), 1.5]


def cases(**groups):
    """pytest params (name, bad value) for each argument name's list of bad values."""
    return [
        pytest.param(name, value, id=f"{name}-{vid(value)}")
        for name, values in groups.items()
        for i, value in enumerate(values)
    ]


class Harness:
    """Recording, valid arguments for run/batch/aggregate; any call lands in rec.calls."""

    def __init__(self, elm):
        self.rec = Recorder()
        rec = self.rec
        queue = FakeQueue(rec, [])
        store = Methods()
        store.load = lambda ctx, key: rec.record("store.load", key)
        store.store = lambda ctx, key, value: rec.record("store.store", key)
        self.args = {
            "init": lambda: rec.record("init") or (0, None),
            "update": lambda m: rec.record("update", m),
            "view": lambda m: rec.record("view", m),
            "producer": queue,
            "consumer": queue,
            "fetcher": lambda ctx: rec.record("fetcher") or ([], False),
            "store": store,
            "hydrator": lambda ctx, k, v: rec.record("hydrator") or (0, None),
            "dehydrator": lambda ctx, k, m: rec.record("dehydrator") or b"",
            "key": "k",
        }
        self.kwargs = {"ctx": elm.Context(timeout=5), "replay": None}

    def call(self, entry, names, **overrides):
        args = [overrides.pop(name, self.args[name]) for name in names]
        kwargs = {**self.kwargs, **overrides}
        return entry(*args, **kwargs)


RUN = ["init", "update", "view", "producer", "consumer"]
BATCH = [*RUN, "fetcher"]
AGGREGATE = [*BATCH, "store", "hydrator", "dehydrator", "key"]

COMMON = dict(
    init=BAD_CALLABLE,
    update=BAD_CALLABLE,
    view=BAD_CALLABLE,
    producer=BAD_PRODUCER,
    consumer=BAD_CONSUMER,
    ctx=BAD_CTX,
    replay=BAD_OPTIONAL_CALLABLE,
)


def entries(elm):
    return {
        "run": (elm.run, RUN),
        "batch": (elm.batch, BATCH),
        "aggregate": (elm.aggregate, AGGREGATE),
    }


@pytest.mark.parametrize("entry", ["run", "batch", "aggregate"])
@pytest.mark.parametrize("name, value", cases(**COMMON))
def test_loop_entry_bad_argument(elm, entry, name, value):
    harness = Harness(elm)
    function, names = entries(elm)[entry]
    with pytest.raises(TypeError, match=name):
        harness.call(function, names, **{name: value})
    assert harness.rec.calls == []


@pytest.mark.parametrize("entry", ["batch", "aggregate"])
@pytest.mark.parametrize("value", BAD_CALLABLE)
def test_bad_fetcher(elm, entry, value):
    harness = Harness(elm)
    function, names = entries(elm)[entry]
    with pytest.raises(TypeError, match="fetcher"):
        harness.call(function, names, fetcher=value)
    assert harness.rec.calls == []


@pytest.mark.parametrize(
    "name, value",
    cases(hydrator=BAD_CALLABLE, dehydrator=BAD_CALLABLE, store=BAD_STORE, key=BAD_KEY),
)
def test_aggregate_bad_argument(elm, name, value):
    harness = Harness(elm)
    with pytest.raises(TypeError, match=name):
        harness.call(elm.aggregate, AGGREGATE, **{name: value})
    assert harness.rec.calls == []


@pytest.mark.parametrize(
    "entry, missing",
    [("run", name) for name in RUN] + [(e, name) for e in ("batch", "aggregate") for name in BATCH],
)
def test_missing_argument_is_named(elm, entry, missing):
    harness = Harness(elm)
    function, names = entries(elm)[entry]
    kwargs = {name: harness.args[name] for name in names if name != missing}
    with pytest.raises(TypeError, match=missing):
        function(**kwargs, **harness.kwargs)
    assert harness.rec.calls == []


@pytest.mark.parametrize("entry", ["run", "batch", "aggregate"])
def test_ctx_and_replay_are_keyword_only(elm, entry):
    harness = Harness(elm)
    function, names = entries(elm)[entry]
    positional = [harness.args[name] for name in names]
    with pytest.raises(TypeError):
        function(*positional, harness.kwargs["ctx"])
    assert harness.rec.calls == []


# ------------------------------------------------------- what callbacks return


def run_with(elm, rec, init, update=None, script=(1,)):
    queue = FakeQueue(rec, script)
    update = update if update is not None else (lambda m: None)
    return elm.run(
        init, update, lambda m: rec.record("view", m), queue, queue, ctx=elm.Context(timeout=5)
    )


NOT_PAIRS = [None, 5, (), (1,), (1, 2, 3), [1, 2, 3], "ab", b"ab", {1: 2, 3: 4}, iter([1, 2])]


@pytest.mark.parametrize("value", NOT_PAIRS, ids=vid)
def test_init_returning_non_pair(elm, value):
    rec = Recorder()
    with pytest.raises(TypeError, match="init"):
        run_with(elm, rec, lambda: value)
    assert rec.calls == []


@pytest.mark.parametrize("value", NOT_PAIRS, ids=vid)
def test_transform_returning_non_pair(elm, value):
    rec = Recorder()
    with pytest.raises(TypeError, match="transform"):
        run_with(elm, rec, lambda: (0, None), update=lambda m: lambda model: value)
    assert rec.calls == [("view", 0), ("put", ()), ("get",), ("rollback",)]


@pytest.mark.parametrize("value", [1, "t", b"t", (fn, None), [fn], object()], ids=vid)
def test_update_returning_non_callable(elm, value):
    rec = Recorder()
    with pytest.raises(TypeError, match="update"):
        run_with(elm, rec, lambda: (0, None), update=lambda m: value)
    assert rec.calls == [("view", 0), ("put", ()), ("get",), ("rollback",)]


@pytest.mark.parametrize(
    "command", [1, 2.5, object(), True, "", "ab", b"", bytearray(), memoryview(b"")], ids=vid
)
@pytest.mark.parametrize("where", ["init", "transform"])
def test_command_not_iterable(elm, command, where):
    rec = Recorder()
    if where == "init":
        with pytest.raises(TypeError, match="command"):
            run_with(elm, rec, lambda: (0, command))
        assert rec.calls == [("view", 0)]
    else:
        with pytest.raises(TypeError, match="command"):
            run_with(elm, rec, lambda: (0, None), update=lambda m: lambda x: (x + m, command))
        assert rec.calls == [("view", 0), ("put", ()), ("get",), ("view", 1), ("rollback",)]


@pytest.mark.parametrize("command", [[1], [fn, "x"], (None, 5), [[fn]], {1: fn}], ids=vid)
@pytest.mark.parametrize("where", ["init", "transform"])
def test_command_entry_not_callable(elm, command, where):
    rec = Recorder()
    if where == "init":
        with pytest.raises(TypeError, match="command entries"):
            run_with(elm, rec, lambda: (0, command))
        assert rec.calls == [("view", 0)]
    else:
        with pytest.raises(TypeError, match="command entries"):
            run_with(elm, rec, lambda: (0, None), update=lambda m: lambda x: (x + m, command))
        assert rec.calls == [("view", 0), ("put", ()), ("get",), ("view", 1), ("rollback",)]


def test_batch_callback_shapes_raise_too(elm):
    buf = elm.Buffer()
    with pytest.raises(TypeError, match="init"):
        elm.batch(
            lambda: 0,
            fn,
            fn,
            buf,
            buf.new_consumer(),
            lambda ctx: ([], False),
            ctx=elm.Context(timeout=5),
        )


# ------------------------------------------------------------------ Context


@pytest.mark.parametrize("parent", ["p", 1, object()], ids=vid)
def test_context_bad_parent(elm, parent):
    with pytest.raises(TypeError, match="parent"):
        elm.Context(parent)


@pytest.mark.parametrize(
    "timeout, error",
    [
        (-1, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("1", TypeError),
        (True, TypeError),
        (None, None),
    ],
    ids=vid,
)
def test_context_wait_bad_timeout(elm, timeout, error):
    ctx = elm.Context()
    if error is None:
        ctx.cancel()
        assert ctx.wait(timeout) is True
        return
    with pytest.raises(error, match="timeout"):
        ctx.wait(timeout)


# ------------------------------------------------------------------- Buffer


@pytest.mark.parametrize("ctx", BAD_CTX, ids=vid)
def test_buffer_put_bad_ctx(elm, ctx):
    buf = elm.Buffer()
    with pytest.raises(TypeError, match="ctx"):
        buf.put(ctx, 1)
    assert buf.slice() == []


@pytest.mark.parametrize("ctx", BAD_CTX, ids=vid)
def test_consumer_get_bad_ctx(elm, ctx):
    buf = elm.Buffer()
    buf.put(None, 1)
    consumer = buf.new_consumer()
    with pytest.raises(TypeError, match="ctx"):
        consumer.get(ctx)
    assert buf.diff(consumer) == 1  # nothing was read
    assert consumer.get(None) == 1


def test_buffer_put_and_get_call_shapes(elm):
    """The ways to call put and get, on both cores: what a ``def`` would accept."""
    buf = elm.Buffer()
    buf.put(None, 1, 2)
    buf.put(None)  # no values: checks only
    buf.put(ctx=None)  # the same, by keyword
    consumer = buf.new_consumer()
    assert [consumer.get(), consumer.get(None)] == [1, 2]
    buf.put(elm.Context(), 3)
    assert consumer.get(ctx=None) == 3
    bad_calls = [
        lambda: buf.put(),  # ctx is required
        lambda: buf.put(None, x=1),
        lambda: buf.put(1, ctx=None),  # ctx twice
        lambda: consumer.get(None, None),
        lambda: consumer.get(x=None),
        lambda: consumer.get(None, ctx=None),
    ]
    for call in bad_calls:
        with pytest.raises(TypeError):
            call()
    assert len(buf) == 3  # no bad call put anything
    assert buf.diff(consumer) == 0  # or read anything


def test_consumer_not_constructible(elm):
    with pytest.raises(TypeError, match="new_consumer"):
        elm.BufferConsumer()


@pytest.mark.parametrize("cleaner", BAD_CALLABLE, ids=vid)
def test_set_cleaner_bad_cleaner(elm, cleaner):
    with pytest.raises(TypeError, match="cleaner"):
        elm.Buffer().set_cleaner(cleaner)


@pytest.mark.parametrize(
    "cooldown, error",
    [
        (-1, ValueError),
        (-0.5, ValueError),
        (math.nan, ValueError),
        (math.inf, ValueError),
        ("0.1", TypeError),
        (True, TypeError),
        (None, TypeError),
        ([0.1], TypeError),
    ],
    ids=vid,
)
def test_set_cleaner_bad_cooldown(elm, cooldown, error):
    with pytest.raises(error, match="cooldown"):
        elm.Buffer().set_cleaner(elm.default_cleaner, cooldown)
    with pytest.raises(error, match="cooldown"):
        elm.Buffer().set_cleaner(elm.default_cleaner, cooldown=cooldown)


@pytest.mark.parametrize("consumer", ["other buffer", None, 1, "c", object()], ids=vid)
def test_diff_bad_consumer(elm, consumer):
    buf = elm.Buffer()
    if consumer == "other buffer":
        consumer = elm.Buffer().new_consumer()
    with pytest.raises((TypeError, ValueError), match="consumer"):
        buf.diff(consumer)


# ----------------------------------------------------------------- cleaners


@pytest.mark.parametrize(
    "kwargs, error, name",
    [
        ({"max_size": "1", "target_size": 0}, TypeError, "max_size"),
        ({"max_size": 1.0, "target_size": 0}, TypeError, "max_size"),
        ({"max_size": True, "target_size": 0}, TypeError, "max_size"),
        ({"max_size": None, "target_size": 0}, TypeError, "max_size"),
        ({"max_size": 1, "target_size": "0"}, TypeError, "target_size"),
        ({"max_size": 1, "target_size": 0.5}, TypeError, "target_size"),
        ({"max_size": 1, "target_size": False}, TypeError, "target_size"),
        ({"max_size": 5, "target_size": -1}, ValueError, "target_size"),
        ({"max_size": 1, "target_size": 2}, ValueError, "max_size"),
        ({"max_size": 1, "target_size": 0, "callback": 5}, TypeError, "callback"),
        ({"max_size": 1, "target_size": 0, "callback": "cb"}, TypeError, "callback"),
    ],
    ids=vid,
)
def test_fixed_buffer_cleaner_bad_args(elm, kwargs, error, name):
    with pytest.raises(error, match=name):
        elm.fixed_buffer_cleaner(**kwargs)


# -------------------------------------------------------------------- tag


@pytest.mark.parametrize("command", [1, 2.5, object(), True, "", "ab", b""], ids=vid)
def test_tag_command_not_iterable(elm, command):
    with pytest.raises(TypeError, match="command"):
        elm.tag(command, str)


@pytest.mark.parametrize("command", [[1], [fn, "x"], [[fn]]], ids=vid)
def test_tag_entry_not_callable(elm, command):
    with pytest.raises(TypeError, match="command entries"):
        elm.tag(command, str)


@pytest.mark.parametrize("target", [1, "t", object()], ids=vid)
def test_tag_target_not_callable(elm, target):
    with pytest.raises(TypeError, match="target"):
        elm.tag([fn], target)


# ------------------------------------------------------------------- stores


@pytest.mark.parametrize("key", BAD_KEY, ids=vid)
def test_store_bad_key(elm, store, key):
    with pytest.raises(TypeError, match="key"):
        store.load(None, key)
    with pytest.raises(TypeError, match="key"):
        store.store(None, key, b"v")


@pytest.mark.parametrize("value", [None, "v", 1, [1], object()], ids=vid)
def test_store_bad_value(elm, store, value):
    with pytest.raises(TypeError, match="value"):
        store.store(None, "k", value)
    assert store.load(None, "k") is None


@pytest.mark.parametrize("path", [None, 1, 1.5, object()], ids=vid)
def test_sqlite_bad_path(elm, path):
    with pytest.raises(TypeError, match="path"):
        elm.SQLiteStore(path)


@pytest.mark.parametrize("name", ["Context", "Buffer", "BufferConsumer"])
def test_core_classes_refuse_subclasses(elm, name):
    # Final on both cores, so code written against one runs on the other.
    with pytest.raises(TypeError, match="not an acceptable base type"):
        type("Sub", (getattr(elm, name),), {})

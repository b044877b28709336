"""aggregate over MemoryStore and SQLiteStore; SQLite durability
(docs/contract.md#aggregate, docs/contract.md#stores)."""

from __future__ import annotations

import json
import subprocess
import sys
from types import ModuleType
from typing import Any

import pytest
from _helpers import aggregate_once, subprocess_env
from _recording import vid

# run, batch and aggregate run through elmstate.aio too (asyncio, uvloop): tests/_modes.py
AIO_MODES = True


class Watched:
    """Wraps a store, recording the keys passed to load and store."""

    def __init__(self, inner):
        self.inner = inner
        self.loads: list = []
        self.stores: list = []

    def load(self, ctx, key):
        self.loads.append(key)
        return self.inner.load(ctx, key)

    def store(self, ctx, key, value):
        self.stores.append(key)
        self.inner.store(ctx, key, value)


class Ledger:
    """A program whose model is a list of int messages; snapshots are JSON."""

    def __init__(self, init_command=None):
        self.calls: list = []
        self.views: list = []
        self.init_command = init_command

    def init(self):
        self.calls.append("init")
        return [], self.init_command

    def update(self, message):
        return lambda model: ([*model, message], None)

    def view(self, model):
        self.views.append(model)

    def hydrator(self, ctx, key, value):
        self.calls.append(("hydrate", key, value))
        return json.loads(value), None

    def dehydrator(self, ctx, key, model):
        self.calls.append(("dehydrate", key, model))
        return json.dumps(model).encode()


def fetch(*messages):
    return lambda ctx: (list(messages), False)


def aggregate(elm, program, store, key, fetcher, **kwargs):
    buf = elm.Buffer()
    kwargs.setdefault("ctx", elm.Context(timeout=5))
    return elm.aggregate(
        program.init,
        program.update,
        program.view,
        buf,
        buf.new_consumer(),
        fetcher,
        store,
        program.hydrator,
        program.dehydrator,
        key,
        **kwargs,
    )


def test_absent_key_starts_from_init_and_stores(elm, store):
    program = Ledger(init_command=elm.new_command(0))
    watched = Watched(store)
    result = aggregate(elm, program, watched, "acct", fetch(1, 2))
    assert sorted(result) == [0, 1, 2]  # the feeder runs concurrently with init's command
    assert program.calls == ["init", ("dehydrate", "acct", result)]
    assert program.views[0] == []
    assert watched.loads == ["acct"]
    assert watched.stores == ["acct"]
    assert store.load(None, "acct") == json.dumps(result).encode()


def test_present_key_is_the_starting_model(elm, store):
    store.store(None, "acct", b"[7, 8]")
    program = Ledger(init_command=elm.new_command("from init"))
    result = aggregate(elm, program, store, "acct", fetch(9))
    assert result == [7, 8, 9]
    assert program.calls == [("hydrate", "acct", b"[7, 8]"), ("dehydrate", "acct", [7, 8, 9])]
    assert program.views == [[7, 8], [7, 8, 9]]  # init's command never ran
    assert store.load(None, "acct") == b"[7, 8, 9]"


def test_second_run_resumes_from_first(elm, store):
    assert aggregate(elm, Ledger(), store, "k", fetch(1)) == [1]
    assert aggregate(elm, Ledger(), store, "k", fetch(2, 3)) == [1, 2, 3]
    assert aggregate(elm, Ledger(), store, "other", fetch(4)) == [4]
    assert store.load(None, "k") == b"[1, 2, 3]"


def test_hydrated_none_model_falls_back_to_init(elm, store):
    store.store(None, "k", b"null")
    program = Ledger()
    assert aggregate(elm, program, store, "k", fetch(5)) == [5]
    assert program.calls[:2] == [("hydrate", "k", b"null"), "init"]


def test_empty_value_is_present(elm, store):
    store.store(None, "k", b"")
    assert store.load(None, "k") == b""
    assert store.load(None, "absent") is None
    program = Ledger()
    program.hydrator = lambda ctx, key, value: (program.calls.append(value) or ["e"], None)
    assert aggregate(elm, program, store, "k", fetch(1)) == ["e", 1]
    assert program.calls[0] == b""
    assert "init" not in program.calls


def test_returns_the_stored_model(elm, store):
    program = Ledger()
    result = aggregate(elm, program, store, "k", fetch(1, 2))
    assert result is program.views[-1]
    assert program.calls[-1] == ("dehydrate", "k", result)
    assert program.calls[-1][2] is result


def test_dehydrator_may_return_bytearray(elm, store):
    program = Ledger()
    program.dehydrator = lambda ctx, key, model: bytearray(b"raw")
    aggregate(elm, program, store, "k", fetch(1))
    assert store.load(None, "k") == b"raw"


def test_callbacks_get_a_context(elm, store):
    store.store(None, "k", b"[]")
    seen: list = []
    program = Ledger()

    def hydrator(ctx, key, value):
        seen.append(ctx)
        return [], None

    def dehydrator(ctx, key, model):
        seen.append(ctx)
        return b"[]"

    program.hydrator, program.dehydrator = hydrator, dehydrator
    aggregate(elm, program, store, "k", fetch(), ctx=None)
    assert len(seen) == 2
    assert all(isinstance(ctx, elm.Context) for ctx in seen)


class Graph:
    """Snapshots that name other keys: hydrating records what each ``load`` receives."""

    def __init__(self, skip=()):
        self.received: list = []
        self.skip = skip

    def hydrator(self, ctx, key, value):
        node = json.loads(value)
        refs: list = []
        for other in node["refs"]:
            if other is None:
                refs.append(None)
            elif other in self.skip:
                refs.append(lambda other=other: (other, None))
            else:
                refs.append(
                    lambda other=other: (
                        other,
                        lambda model, other=other: self.received.append((key, other, model)),
                    )
                )
        return {"name": node["name"]}, refs


def put_node(store, key, *refs):
    store.store(None, key, json.dumps({"name": key, "refs": list(refs)}).encode())


def run_graph(elm, store, graph, key="A"):
    program = Ledger()
    program.hydrator = graph.hydrator
    program.dehydrator = lambda ctx, key, model: json.dumps(model).encode()
    watched = Watched(store)
    result = aggregate(elm, program, watched, key, fetch())
    return result, watched, program


def test_read_only_models_two_cycle(elm, store):
    put_node(store, "A", "B")
    put_node(store, "B", "A")
    graph = Graph()
    result, watched, program = run_graph(elm, store, graph)
    assert watched.loads == ["A", "B"]
    assert graph.received == [("B", "A", {"name": "A"}), ("A", "B", {"name": "B"})]
    assert result == {"name": "A"}
    assert "init" not in program.calls


def test_read_only_models_self_cycle(elm, store):
    put_node(store, "A", "A", "A")
    graph = Graph()
    result, watched, _ = run_graph(elm, store, graph)
    assert watched.loads == ["A"]
    assert graph.received == [("A", "A", {"name": "A"}), ("A", "A", {"name": "A"})]


def test_read_only_models_absent_keys(elm, store):
    put_node(store, "A", "missing", "B", "missing")
    put_node(store, "B", "missing", "A")
    graph = Graph()
    result, watched, _ = run_graph(elm, store, graph)
    assert watched.loads == ["A", "missing", "B"]
    assert graph.received == [
        ("A", "missing", None),
        ("B", "missing", None),
        ("B", "A", {"name": "A"}),
        ("A", "B", {"name": "B"}),
        ("A", "missing", None),
    ]


def test_read_only_models_deep_chain_and_diamond(elm, store):
    put_node(store, "A", "B", "C")
    put_node(store, "B", "D")
    put_node(store, "C", "D")
    put_node(store, "D")
    graph = Graph()
    _, watched, _ = run_graph(elm, store, graph)
    assert watched.loads == ["A", "B", "D", "C"]
    assert graph.received == [
        ("B", "D", {"name": "D"}),
        ("A", "B", {"name": "B"}),
        ("C", "D", {"name": "D"}),
        ("A", "C", {"name": "C"}),
    ]


def test_read_only_models_none_entries_and_none_load_skipped(elm, store):
    put_node(store, "A", None, "B", "C", None)
    put_node(store, "B")
    put_node(store, "C")
    graph = Graph(skip={"B"})
    _, watched, _ = run_graph(elm, store, graph)
    assert watched.loads == ["A", "C"]  # B's load is None: B is never loaded
    assert graph.received == [("A", "C", {"name": "C"})]


def test_read_only_models_not_loaded_when_root_absent(elm, store):
    put_node(store, "B", "A")
    graph = Graph()
    result, watched, program = run_graph(elm, store, graph)
    assert watched.loads == ["A"]
    assert graph.received == []
    assert program.calls == ["init"]
    assert result == []


def test_read_only_models_may_be_a_generator(elm, store):
    store.store(None, "A", b"x")
    store.store(None, "B", b"y")
    got: list = []

    def hydrator(ctx, key, value):
        refs = (f for f in [lambda: ("B", got.append)]) if key == "A" else None
        return value.decode(), refs

    program = Ledger()
    program.hydrator = hydrator
    program.dehydrator = lambda ctx, key, model: model.encode()
    assert aggregate(elm, program, store, "A", fetch()) == "x"
    assert got == ["y"]


def test_read_only_models_chained_thousands_deep(elm: ModuleType) -> None:
    """Issue 7, minor: a 3,000-deep chain of read-only references loads without recursion.

    k0 references k1, k1 references k2, ... k2999. Every load callback gets the
    model it asked for, deepest first, as a recursive depth-first load would.
    """
    depth = 3_000
    store = elm.MemoryStore()
    for i in range(depth):
        store.store(None, f"k{i}", f"model-{i}".encode())
    loads: list[tuple[int, Any]] = []

    def hydrator(ctx: Any, key: str, value: bytes) -> tuple[Any, Any]:
        i = int(key[1:])
        if i == depth - 1:
            return value.decode(), None

        def receive(model: Any) -> None:
            loads.append((i, model))

        return value.decode(), [lambda: (f"k{i + 1}", receive)]

    assert aggregate_once(elm, store, hydrator, "k0") == "model-0"
    assert loads == [(i, f"model-{i + 1}") for i in reversed(range(depth - 1))]


@pytest.mark.parametrize("failure", ["update", "fetcher", "dehydrator", "view", "store.store"])
@pytest.mark.parametrize("present", [False, True])
def test_failure_stores_nothing(elm, store, failure, present):
    if present:
        store.store(None, "k", b"[1]")
    boom = RuntimeError(failure)
    program = Ledger()
    fetcher = fetch(2)
    target = store
    if failure == "update":

        def update(message):
            raise boom

        program.update = update
    elif failure == "fetcher":

        def fetcher(ctx):
            raise boom
    elif failure == "dehydrator":

        def dehydrator(ctx, key, model):
            raise boom

        program.dehydrator = dehydrator
    elif failure == "view":

        def view(model):
            if model == [1, 2] or model == [2]:
                raise boom

        program.view = view
    else:

        class Failing(Watched):
            def store(self, ctx, key, value):
                raise boom

        target = Failing(store)
    with pytest.raises(RuntimeError) as info:
        aggregate(elm, program, target, "k", fetcher)
    assert info.value is boom
    assert store.load(None, "k") == (b"[1]" if present else None)


def test_cancelled_ctx_stores_nothing(elm, store):
    ctx = elm.Context()
    ctx.cancel()
    with pytest.raises(elm.Canceled) as info:
        aggregate(elm, Ledger(), store, "k", fetch(1), ctx=ctx)
    assert info.value is ctx.err
    assert store.load(None, "k") is None


def test_hydrator_error_propagates(elm, store):
    store.store(None, "k", b"[1]")
    boom = ValueError("corrupt")
    program = Ledger()

    def hydrator(ctx, key, value):
        raise boom

    program.hydrator = hydrator
    with pytest.raises(ValueError) as info:
        aggregate(elm, program, store, "k", fetch(2))
    assert info.value is boom
    assert program.views == []
    assert store.load(None, "k") == b"[1]"


@pytest.mark.parametrize("value", ["[1]", 5, [1], object()], ids=vid)
def test_store_load_returning_non_bytes(elm, value):
    class Bad:
        stored: list = []

        def load(self, ctx, key):
            return value

        def store(self, ctx, key, v):
            self.stored.append(v)

    bad = Bad()
    program = Ledger()
    with pytest.raises(TypeError, match="load"):
        aggregate(elm, program, bad, "k", fetch(1))
    assert bad.stored == []
    assert program.views == []


@pytest.mark.parametrize("value", ["[1]", None, 5, [1]], ids=vid)
def test_dehydrator_returning_non_bytes(elm, store, value):
    program = Ledger()
    program.dehydrator = lambda ctx, key, model: value
    with pytest.raises(TypeError, match="dehydrator"):
        aggregate(elm, program, store, "k", fetch(1))
    assert store.load(None, "k") is None


@pytest.mark.parametrize("key", [None, 1, b"k", ("k",)], ids=vid)
def test_key_not_a_str(elm, store, key):
    program = Ledger()
    watched = Watched(store)
    with pytest.raises(TypeError, match="key"):
        aggregate(elm, program, watched, key, fetch(1))
    assert watched.loads == [] and program.calls == []


class LoadOnly:
    def load(self, ctx, key):
        return None


class StoreOnly:
    def store(self, ctx, key, value):
        pass


class NotCallable:
    load = None
    store = 5


@pytest.mark.parametrize("bad", [None, object(), LoadOnly(), StoreOnly(), NotCallable(), {}])
def test_store_lacking_methods(elm, bad):
    program = Ledger()
    with pytest.raises(TypeError, match="store"):
        aggregate(elm, program, bad, "k", fetch(1))
    assert program.calls == [] and program.views == []


# ----------------------------------------------------------------- SQLiteStore


def test_sqlite_persists_across_reopen(elm, tmp_path):
    path = tmp_path / "db.sqlite3"
    with elm.SQLiteStore(path) as first:
        assert aggregate(elm, Ledger(), first, "k", fetch(1, 2)) == [1, 2]
        first.store(None, "empty", b"")
    with elm.SQLiteStore(str(path)) as second:
        assert second.load(None, "k") == b"[1, 2]"
        assert second.load(None, "empty") == b""
        assert second.load(None, "absent") is None
        assert aggregate(elm, Ledger(), second, "k", fetch(3)) == [1, 2, 3]
    with elm.SQLiteStore(path) as third:
        assert third.load(None, "k") == b"[1, 2, 3]"


def test_sqlite_overwrite_and_binary(elm, tmp_path):
    with elm.SQLiteStore(tmp_path / "db") as db:
        db.store(None, "k", b"\x00\xff\x00")
        assert db.load(None, "k") == b"\x00\xff\x00"
        db.store(None, "k", bytearray(b"two"))
        assert db.load(None, "k") == b"two"
        assert type(db.load(None, "k")) is bytes


def test_sqlite_close_is_idempotent_and_final(elm, tmp_path):
    db = elm.SQLiteStore(tmp_path / "db")
    db.close()
    db.close()
    with pytest.raises(ValueError, match="closed"):
        db.load(None, "k")
    with pytest.raises(ValueError, match="closed"):
        db.store(None, "k", b"v")


def _python(elm, code: str) -> str:
    done = subprocess.run(
        [sys.executable, "-c", code],
        env=subprocess_env(elm),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sqlite_survives_process_restart(elm, tmp_path):
    path = str(tmp_path / "restart.sqlite3")
    _python(
        elm,
        "import elmstate, sys\n"
        f"with elmstate.SQLiteStore({path!r}) as s:\n"
        "    s.store(None, 'k', b'written by a dead process')\n"
        "    s.store(None, 'empty', b'')\n"
        "    assert elmstate.compiled is " + repr(elm.compiled) + "\n",
    )
    out = _python(
        elm,
        "import elmstate\n"
        f"with elmstate.SQLiteStore({path!r}) as s:\n"
        "    print(repr((s.load(None, 'k'), s.load(None, 'empty'), s.load(None, 'absent'))))\n",
    )
    assert out.strip() == repr((b"written by a dead process", b"", None))
    with elm.SQLiteStore(path) as db:
        assert db.load(None, "k") == b"written by a dead process"
        assert db.load(None, "empty") == b""


def test_aggregate_resumes_after_process_restart(elm, tmp_path):
    path = str(tmp_path / "agg.sqlite3")
    code = (
        "import json, elmstate as e\n"
        f"with e.SQLiteStore({path!r}) as s:\n"
        "    b = e.Buffer()\n"
        "    m = e.aggregate(lambda: ([], None), lambda m: (lambda x: (x + [m], None)),\n"
        "        lambda m: None, b, b.new_consumer(), lambda c: ([{n}], False), s,\n"
        "        lambda c, k, v: (json.loads(v), None), lambda c, k, m: json.dumps(m).encode(),\n"
        "        'k', ctx=e.Context(timeout=20))\n"
        "    print(m)\n"
    )
    assert _python(elm, code.replace("{n}", "1")).strip() == "[1]"
    assert _python(elm, code.replace("{n}", "2")).strip() == "[1, 2]"
    with elm.SQLiteStore(path) as db:
        assert db.load(None, "k") == b"[1, 2]"


@pytest.mark.parametrize("reply", [None, 5, ([],), ([], None, 1), "ab"], ids=vid)
def test_hydrator_returning_non_pair(elm, store, reply):
    store.store(None, "k", b"[1]")
    program = Ledger()
    program.hydrator = lambda ctx, key, value: reply
    with pytest.raises(TypeError, match="hydrator"):
        aggregate(elm, program, store, "k", fetch(2))
    assert program.views == []
    assert store.load(None, "k") == b"[1]"

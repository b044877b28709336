"""elmstate.trace: record a loop in every mode, replay it, find where a replay diverges
(docs/trace.md). The programs are the house example (examples/counters.py), recorded
through a codec for its dataclasses, and small JSON-valued ones."""

from __future__ import annotations

import dataclasses
import importlib.util
import json
import sys
import threading
from pathlib import Path
from types import ModuleType
from typing import Any, Callable

import pytest
from _helpers import SAFETY

EXAMPLE = Path(__file__).resolve().parent.parent / "examples" / "counters.py"


def _load_example() -> ModuleType:
    spec = importlib.util.spec_from_file_location("trace_counters_example", EXAMPLE)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


ex = _load_example()  # its commands come from elmstate.commands: plain Python on both cores


class CountersCodec:
    """The example's frozen dataclasses as tagged JSON objects, and back."""

    types = {
        cls.__name__: cls
        for cls in (ex.Increment, ex.Milestone, ex.Left, ex.Right, ex.Counter, ex.Counters)
    }

    def __init__(self) -> None:
        self.encoded = 0
        self.decoded = 0

    def encode(self, obj: Any) -> Any:
        self.encoded += 1
        return self._encode(obj)

    def _encode(self, obj: Any) -> Any:
        if dataclasses.is_dataclass(obj) and not isinstance(obj, type):
            fields = {f.name: self._encode(getattr(obj, f.name)) for f in dataclasses.fields(obj)}
            return {"type": type(obj).__name__, "fields": fields}
        return obj

    def decode(self, value: Any) -> Any:
        self.decoded += 1
        return self._decode(value)

    def _decode(self, value: Any) -> Any:
        if isinstance(value, dict):
            fields = {k: self._decode(v) for k, v in value["fields"].items()}
            return self.types[value["type"]](**fields)
        return value


def lines(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def milestones(count: int) -> int:
    right = count // 3
    return (count - right) // 10 + right // 10


def check_counters_trace(path: Path, count: int, first: str = "init") -> None:
    """One line per tick: the first, a click each, a milestone each; no marker, no error."""
    records = lines(path)
    assert [r["seq"] for r in records] == list(range(len(records)))
    assert records[0]["kind"] == first and records[0]["message"] is None
    assert [r["kind"] for r in records[1:]] == ["tick"] * (count + milestones(count))
    for record in records[1:]:
        assert record["error"] is None
        assert record["message"]["type"] in ("Left", "Right")  # never a batch marker
        assert record["duration"] >= 0
    times = [r["time"] for r in records]
    assert times == sorted(times)
    produced = [p for r in records for p in r["produced"]]
    assert len(produced) == milestones(count)
    assert all(p["fields"]["msg"]["type"] == "Milestone" for p in produced)


# ------------------------------------------------------------------ the three modes


def test_run_recorded_and_replayed(elm: ModuleType, tmp_path: Path) -> None:
    count = 45
    goal = ex.expected(count)
    path = tmp_path / "run.jsonl"
    seen: list[Any] = []
    reached = threading.Event()

    def view(model: Any) -> None:
        seen.append(model)
        if model == goal:
            reached.set()

    ctx = elm.Context(timeout=SAFETY * 4)
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        buf.put(None, *(ex.click(i) for i in range(count)))

        def stop_when_drained() -> None:
            # Cancel between ticks: once the goal was seen and the buffer is empty,
            # the loop waits in get, which raises (nothing read: no tick recorded).
            reached.wait(SAFETY * 4)
            while len(buf) and not ctx.done:
                reached.wait(0.001)
            ctx.cancel()

        stopper = threading.Thread(target=stop_when_drained)
        stopper.start()
        with elm.trace.Recorder(path, codec=CountersCodec()) as rec:
            wrapped = rec.wrap(ex.init, ex.update, view, buf, consumer)
            with pytest.raises(elm.Canceled):
                elm.run(*wrapped, ctx=ctx)
        stopper.join()
    assert seen[-1] == goal
    check_counters_trace(path, count)
    assert rec.ticks == 1 + count + milestones(count)
    assert elm.trace.replay(path, ex.init, ex.update, codec=CountersCodec()) == goal


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_batch_recorded_and_replayed(elm: ModuleType, tmp_path: Path, feed: str) -> None:
    count = 60
    path = tmp_path / "batch.jsonl"
    codec = CountersCodec()
    with elm.trace.Recorder(path, codec=codec) as rec, elm.Buffer() as buf:
        with buf.new_consumer() as consumer:
            wrapped = rec.wrap(ex.init, ex.update, lambda model: None, buf, consumer)
            model = elm.batch(*wrapped, ex.Clicks(count), feed=feed)
    assert model == ex.expected(count)
    check_counters_trace(path, count)
    assert lines(path)[-1]["model"] == codec.encode(model)
    assert elm.trace.replay(path, ex.init, ex.update, codec=codec) == model
    assert codec.decoded > 0


def test_aggregate_recorded_and_replayed(elm: ModuleType, tmp_path: Path) -> None:
    store = elm.MemoryStore()
    codec = CountersCodec()
    models = []
    for name, count in (("first", 30), ("second", 21)):
        with elm.trace.Recorder(tmp_path / f"{name}.jsonl", codec=codec) as rec:
            with elm.Buffer() as buf, buf.new_consumer() as consumer:
                wrapped = rec.wrap(ex.init, ex.update, lambda model: None, buf, consumer)
                models.append(
                    elm.aggregate(
                        *wrapped, ex.Clicks(count), store, ex.hydrate, ex.dehydrate, ex.KEY
                    )
                )
    assert models[0] == ex.expected(30)
    assert models[1].left.count == 20 + 14 and models[1].right.count == 10 + 7
    # The first run began with init; the second from the stored model, which the
    # trace records as a "start" tick and replay takes as it is.
    check_counters_trace(tmp_path / "first.jsonl", 30)
    second = lines(tmp_path / "second.jsonl")
    assert second[0]["kind"] == "start"
    assert codec.decode(second[0]["model"]) == models[0]
    for name, model in zip(("first", "second"), models):
        assert (
            elm.trace.replay(tmp_path / f"{name}.jsonl", ex.init, ex.update, codec=codec) == model
        )


def test_reused_callbacks_record_one_loop_after_another(elm: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "two.jsonl"
    with elm.trace.Recorder(path) as rec, elm.Buffer() as buf, buf.new_consumer() as consumer:
        wrapped = rec.wrap(init_sum, update_sum, lambda model: None, buf, consumer)
        assert elm.batch(*wrapped, elm_pages([1, 2])) == 3
        assert elm.batch(*wrapped, elm_pages([5])) == 5
    assert [r["kind"] for r in lines(path)] == ["init", "tick", "tick", "init", "tick"]
    assert elm.trace.replay(path, init_sum, update_sum) == 5


# ---------------------------------------------------------------- a small JSON program


def init_sum() -> tuple[int, None]:
    return 0, None


def update_sum(message: Any) -> Callable[[int], tuple[int, Any]] | None:
    if message == "skip":
        return None  # ignored: the model stays, the tick is still recorded
    if message == "fail":

        def fail(model: int) -> tuple[int, None]:
            raise ValueError("no such number")

        return fail
    if isinstance(message, list):  # [n, *children]: add n, produce the children
        number, children = message[0], message[1:]
        return lambda model: (model + number, [lambda c=c: c for c in children])
    return lambda model: (model + message, None)


def elm_pages(*batches: list[Any]) -> Callable[[Any], tuple[list[Any], bool]]:
    """A fetcher handing out ``batches`` one per call, the last with more=False."""
    remaining = list(batches)

    def fetcher(ctx: Any) -> tuple[list[Any], bool]:
        return remaining.pop(0), bool(remaining[1:])

    return fetcher


def record_batch(
    elm: ModuleType,
    path: Path,
    *messages: Any,
    update: Any = update_sum,
    codec: Any = None,
    init: Any = init_sum,
) -> Any:
    with elm.trace.Recorder(path, codec=codec) as rec, elm.Buffer() as buf:
        with buf.new_consumer() as consumer:
            wrapped = rec.wrap(init, update, lambda model: None, buf, consumer)
            return elm.batch(*wrapped, elm_pages(list(messages)), feed="inline")


def test_every_kind_of_tick(elm: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "kinds.jsonl"
    buf = elm.Buffer()
    buf.put(None, None)  # a None message: a tick without update
    assert record_batch_on(elm, path, buf, [1, 7, 8], "skip", 2) == 1 + 7 + 8 + 2
    records = lines(path)
    assert [(r["message"], r["produced"], r["model"]) for r in records] == [
        (None, [], 0),
        (None, [], 0),
        ([1, 7, 8], [7, 8], 1),
        ("skip", [], 1),
        (2, [], 3),
        (7, [], 10),
        (8, [], 18),
    ]
    assert elm.trace.replay(path, init_sum, update_sum) == 18


def record_batch_on(elm: ModuleType, path: Path, buf: Any, *messages: Any) -> Any:
    with elm.trace.Recorder(path) as rec, buf, buf.new_consumer() as consumer:
        wrapped = rec.wrap(init_sum, update_sum, lambda model: None, buf, consumer)
        return elm.batch(*wrapped, elm_pages(list(messages)))


def test_failed_tick_recorded_and_not_replayed(elm: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "failed.jsonl"
    with pytest.raises(ValueError, match="no such number"):
        record_batch(elm, path, 4, [5, 6], "fail", 9)
    records = lines(path)
    assert [r["message"] for r in records] == [None, 4, [5, 6], "fail"]
    failed = records[-1]
    assert failed["error"] == {"type": "ValueError", "message": "no such number"}
    assert failed["model"] is None
    assert elm.trace.replay(path, init_sum, update_sum) == 9  # the failed tick rolled back


def test_failed_first_ticks(elm: ModuleType, tmp_path: Path) -> None:
    def bad_init() -> Any:
        raise KeyError("init")

    with pytest.raises(KeyError):
        record_batch(elm, tmp_path / "init.jsonl", 1, init=bad_init)
    (record,) = lines(tmp_path / "init.jsonl")
    assert (record["kind"], record["error"]["type"]) == ("init", "KeyError")
    with pytest.raises(elm.trace.TraceFileError, match="no tick began a loop") as caught:
        elm.trace.replay(tmp_path / "init.jsonl", bad_init, update_sum)
    assert caught.value.line is None

    # A first tick that fails where no wrapped callback sees it (the core refuses
    # init's command): the recorder's exit writes it, with the error.
    with pytest.raises(TypeError, match="command"):
        record_batch(elm, tmp_path / "core.jsonl", 1, init=lambda: (0, "not a command"))
    (record,) = lines(tmp_path / "core.jsonl")
    assert record["kind"] == "init" and record["error"]["type"] == "TypeError"


def test_every_line_is_on_disk_when_its_tick_ends(elm: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "live.jsonl"
    on_disk: list[int] = []

    def view(model: Any) -> None:  # while tick n runs, ticks 0..n-1 are written, whole
        text = path.read_text()
        assert text == "" or text.endswith("\n")
        on_disk.append(len(text.splitlines()))

    with elm.trace.Recorder(path) as rec, elm.Buffer() as buf, buf.new_consumer() as consumer:
        wrapped = rec.wrap(init_sum, update_sum, view, buf, consumer)
        elm.batch(*wrapped, elm_pages([1, 2, 3]), feed="inline")
    assert on_disk == [0, 1, 2, 3]


# ------------------------------------------------------------------------ divergence


class FailingFile:
    """The recorder's file, refusing its ``fail_at``-th write half-way (a disk full)."""

    def __init__(self, inner: Any, fail_at: int) -> None:
        self.inner = inner
        self.writes = 0
        self.fail_at = fail_at

    def write(self, data: Any) -> int:
        self.writes += 1
        if self.writes == self.fail_at:
            self.inner.write(bytes(data)[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return int(self.inner.write(data))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.inner, name)


@pytest.mark.parametrize("mode", ["run", "supervise"])
def test_a_committed_ticks_line_that_cannot_be_written_loses_no_message(
    elm: ModuleType, tmp_path: Path, mode: str
) -> None:
    # The commit went through: the loop must not take the write error for a
    # failed commit (supervise would restart from the model before the message,
    # which is gone). The line is taken back, and the next get raises the error.
    path = tmp_path / "t.jsonl"
    buf = elm.Buffer()
    consumer = buf.new_consumer()
    buf.put(None, 1, 2, 3)
    seen: list[int] = []
    with elm.trace.Recorder(path) as rec:
        rec._file = FailingFile(rec._file, fail_at=2)  # the init line goes out, tick 1's not
        wrapped = rec.wrap(
            lambda: (0, None),
            lambda m: lambda model: (model + m, None),
            seen.append,
            buf,
            consumer,
        )
        ctx = elm.Context(timeout=0.3)
        run = elm.run if mode == "run" else elm.supervise
        with pytest.raises(BaseException) as raised:
            run(*wrapped, ctx=ctx)
    if mode == "run":
        assert isinstance(raised.value, OSError) and raised.value.errno == 28
    else:  # the failing get is retried until ctx ends: no message is blamed
        assert isinstance(raised.value, elm.DeadlineExceeded)
    assert seen[-1] == 1  # message 1 applied once and kept
    assert buf.diff(consumer) == 2  # committed: never delivered again
    ticks = list(elm.trace.read(path))  # every line whole
    assert [t.kind for t in ticks] == ["init"]


def test_divergence_at_the_right_tick(elm: ModuleType, tmp_path: Path) -> None:
    outside = {"bonus": 0}  # state kept outside the model: update is not deterministic

    def update(message: Any) -> Any:
        if message == "bonus":
            return lambda model: (model + outside["bonus"], None)
        return update_sum(message)

    path = tmp_path / "diverge.jsonl"
    assert record_batch(elm, path, 1, 2, "bonus", 3, "bonus", update=update) == 6
    outside["bonus"] = 100
    with pytest.raises(elm.trace.Divergence) as caught:
        elm.trace.replay(path, init_sum, update)
    diverged = caught.value
    assert (diverged.tick, diverged.line) == (3, 4)  # init, 1, 2, then the first "bonus"
    assert (diverged.recorded, diverged.rebuilt) == (3, 103)
    assert "tick 3" in str(diverged) and str(path) in str(diverged)
    outside["bonus"] = 0
    assert elm.trace.replay(path, init_sum, update) == 6


def test_divergence_of_init(elm: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "init.jsonl"
    record_batch(elm, path, 1)
    with pytest.raises(elm.trace.Divergence) as caught:
        elm.trace.replay(path, lambda: (10, None), update_sum)
    assert (caught.value.tick, caught.value.recorded, caught.value.rebuilt) == (0, 0, 10)


def test_divergence_decodes_through_the_codec(elm: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "counters.jsonl"
    with elm.trace.Recorder(path, codec=CountersCodec()) as rec, elm.Buffer() as buf:
        with buf.new_consumer() as consumer:
            wrapped = rec.wrap(ex.init, ex.update, lambda model: None, buf, consumer)
            elm.batch(*wrapped, ex.Clicks(12))

    def drifting(msg: Any) -> Any:  # a click on the right counts on the left
        return ex.update(ex.Left(msg.msg) if isinstance(msg, ex.Right) else msg)

    with pytest.raises(elm.trace.Divergence) as caught:
        elm.trace.replay(path, ex.init, drifting, codec=CountersCodec())
    diverged = caught.value
    assert diverged.tick == 3  # click 2 is the first on the right
    assert diverged.recorded == ex.Counters(ex.Counter(2), ex.Counter(1))
    assert diverged.rebuilt == ex.Counters(ex.Counter(3), ex.Counter(0))


# ------------------------------------------------------------------------ bad files


def recorded(elm: ModuleType, tmp_path: Path) -> Path:
    path = tmp_path / "good.jsonl"
    record_batch(elm, path, 1, 2, 3, 4)
    return path


def test_file_cut_mid_line(elm: ModuleType, tmp_path: Path) -> None:
    path = recorded(elm, tmp_path)
    data = path.read_bytes()
    third = data.index(b"\n", data.index(b"\n") + 1) + 1  # line 3 starts here
    path.write_bytes(data[: third + 25])
    for attempt in (
        lambda: elm.trace.replay(path, init_sum, update_sum),
        lambda: list(elm.trace.read(path)),
    ):
        with pytest.raises(elm.trace.TraceFileError) as caught:
            attempt()
        assert caught.value.line == 3 and caught.value.path == str(path)
        assert f"{path}, line 3: the file ends in the middle of this line" in str(caught.value)


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda lines: lines[:2] + [b"{not json\n"] + lines[3:], "line 3: not JSON"),
        (lambda lines: lines[:2] + [b"\n"] + lines[3:], "line 3: an empty line"),
        (lambda lines: lines[:2] + [b"[1, 2]\n"] + lines[3:], "line 3: a JSON list"),
        (lambda lines: lines[:2] + lines[3:], "line 3: tick 3 where tick 2 was due"),
        (lambda lines: lines[:1] + [b'{"seq": 1}\n'] + lines[2:], "line 2: a tick record without"),
        (
            lambda lines: [lines[0].replace(b'"kind":"init"', b'"kind":"nap"')] + lines[1:],
            "line 1: kind must be one of",
        ),
        (lambda lines: lines[:2] + [b"\xff\xfe\n"] + lines[3:], "line 3: not JSON"),
    ],
)
def test_malformed_lines(
    elm: ModuleType, tmp_path: Path, damage: Callable[[list[bytes]], list[bytes]], message: str
) -> None:
    path = recorded(elm, tmp_path)
    path.write_bytes(b"".join(damage(path.read_bytes().splitlines(keepends=True))))
    with pytest.raises(elm.trace.TraceFileError, match=message):
        elm.trace.replay(path, init_sum, update_sum)


def test_empty_file(elm: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "empty.jsonl"
    path.write_bytes(b"")
    with pytest.raises(elm.trace.TraceFileError, match="empty trace"):
        elm.trace.replay(path, init_sum, update_sum)


# ------------------------------------------------------------------------- codecs


def test_codec_round_trip(elm: ModuleType, tmp_path: Path) -> None:
    class Tagged:
        """Messages and models as ("tag", value) tuples: JSON lists would lose the tuple."""

        def encode(self, obj: Any) -> Any:
            return {"tuple": list(obj)} if isinstance(obj, tuple) else obj

        def decode(self, value: Any) -> Any:
            return tuple(value["tuple"]) if isinstance(value, dict) else value

    def init() -> tuple[Any, None]:
        return ("sum", 0), None

    def update(message: Any) -> Any:
        assert isinstance(message, tuple), "replay hands update the decoded message"
        return lambda model: ((model[0], model[1] + message[1]), None)

    path = tmp_path / "tagged.jsonl"
    model = record_batch(
        elm, path, ("add", 2), ("add", 5), init=init, update=update, codec=Tagged()
    )
    assert model == ("sum", 7)
    assert lines(path)[1]["message"] == {"tuple": ["add", 2]}
    assert elm.trace.replay(path, init, update, codec=Tagged()) == ("sum", 7)


def test_unencodable_message_fails_its_tick(elm: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "bad.jsonl"
    with pytest.raises(elm.trace.EncodeError, match="the message of tick 2") as caught:
        record_batch(elm, path, 1, {1j}, 2, update=lambda m: lambda model: (model, None))
    assert (caught.value.tick, caught.value.part) == (2, "message")
    assert isinstance(caught.value, TypeError)
    records = lines(path)
    assert len(records) == 3 and records[-1]["error"]["type"] == "elmstate.trace.EncodeError"
    assert records[-1]["message"] is None  # it could not be written


def test_unencodable_model_and_output(elm: ModuleType, tmp_path: Path) -> None:
    with pytest.raises(elm.trace.EncodeError, match="the model of tick 0") as caught:
        record_batch(elm, tmp_path / "model.jsonl", 1, init=lambda: (float("nan"), None))
    assert caught.value.part == "model"
    assert lines(tmp_path / "model.jsonl")[0]["error"]["type"] == "elmstate.trace.EncodeError"
    with pytest.raises(elm.trace.EncodeError, match="the produced of tick 1"):
        record_batch(
            elm, tmp_path / "out.jsonl", 1, update=lambda m: lambda n: (n, [lambda: object()])
        )


def test_codec_that_returns_none_or_raises(elm: ModuleType, tmp_path: Path) -> None:
    class Nothing:
        def encode(self, obj: Any) -> Any:
            return None

        def decode(self, value: Any) -> Any:
            return value

    with pytest.raises(elm.trace.EncodeError, match="returned None"):
        record_batch(elm, tmp_path / "none.jsonl", 1, codec=Nothing())

    class Raising(Nothing):
        def encode(self, obj: Any) -> Any:
            raise LookupError("unknown type")

    with pytest.raises(elm.trace.EncodeError, match="unknown type") as caught:
        record_batch(elm, tmp_path / "raise.jsonl", 1, codec=Raising())
    assert isinstance(caught.value.__cause__, LookupError)


# ---------------------------------------------------------------- arguments, misuse


def test_bad_arguments_name_the_argument(elm: ModuleType, tmp_path: Path) -> None:
    trace = elm.trace
    with pytest.raises(TypeError, match="^path must be"):
        trace.Recorder(42)
    with pytest.raises(TypeError, match="^codec must have a callable encode"):
        trace.Recorder(tmp_path / "t.jsonl", codec=object())
    good = [init_sum, update_sum, print, elm.Buffer(), None]
    good[4] = good[3].new_consumer()
    with trace.Recorder(tmp_path / "t.jsonl") as rec:
        for index, name in enumerate(("init", "update", "view", "producer", "consumer")):
            args = list(good)
            args[index] = object()
            with pytest.raises(TypeError, match=f"^{name} must"):
                rec.wrap(*args)
    with pytest.raises(TypeError, match="^path must be"):
        trace.replay(None, init_sum, update_sum)
    with pytest.raises(TypeError, match="^init must be callable"):
        trace.replay(tmp_path / "t.jsonl", 1, update_sum)
    with pytest.raises(TypeError, match="^update must be callable"):
        trace.replay(tmp_path / "t.jsonl", init_sum, None)
    with pytest.raises(TypeError, match="^codec must have a callable decode"):
        trace.replay(
            tmp_path / "t.jsonl", init_sum, update_sum, codec=type("E", (), {"encode": len})()
        )
    with pytest.raises(TypeError, match="^path must be"):
        trace.read(b"bytes")  # type: ignore[arg-type]
    good[3].close()


def test_closed_recorder_fails_the_loop(elm: ModuleType, tmp_path: Path) -> None:
    rec = elm.trace.Recorder(tmp_path / "closed.jsonl")
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        wrapped = rec.wrap(init_sum, update_sum, lambda model: None, buf, consumer)
        rec.close()
        rec.close()  # idempotent
        with pytest.raises(ValueError, match="is closed"):
            elm.batch(*wrapped, elm_pages([1]))
    assert "closed" in repr(rec)


def test_wrapped_parts_keep_the_originals(elm: ModuleType, tmp_path: Path) -> None:
    with elm.trace.Recorder(tmp_path / "w.jsonl") as rec, elm.Buffer() as buf:
        consumer = buf.new_consumer()
        wrapped = rec.wrap(init_sum, update_sum, print, buf, consumer)
        assert [w.__wrapped__ for w in wrapped] == [init_sum, update_sum, print, buf, consumer]
        assert rec.path == str(tmp_path / "w.jsonl")


def test_read_gives_records(elm: ModuleType, tmp_path: Path) -> None:
    path = recorded(elm, tmp_path)
    ticks = list(elm.trace.read(path))
    assert [t.seq for t in ticks] == [0, 1, 2, 3, 4]
    assert [t.line for t in ticks] == [1, 2, 3, 4, 5]
    assert [t.message for t in ticks] == [None, 1, 2, 3, 4]
    assert ticks[-1].model == 10 and ticks[-1].error is None
    assert all(isinstance(t, elm.trace.Tick) for t in ticks)


def test_two_loops_at_once_are_refused(elm: ModuleType, tmp_path: Path) -> None:
    with elm.trace.Recorder(tmp_path / "two.jsonl") as rec, elm.Buffer() as buf:
        buf.put(None, 1, 2)
        consumer = buf.new_consumer()
        other = buf.new_consumer()
        *_, first = rec.wrap(init_sum, update_sum, print, buf, consumer)
        *_, second = rec.wrap(init_sum, update_sum, print, buf, other)
        got: list[Any] = []
        reader = threading.Thread(target=lambda: got.append(first.get(None)))
        reader.start()
        reader.join()
        assert got == [1]  # a tick is under way on the reader's thread
        with pytest.raises(RuntimeError, match="two loops share one Recorder"):
            second.get(None)


def test_a_model_equal_in_python_but_not_in_json_diverges(elm: ModuleType, tmp_path: Path) -> None:
    path = tmp_path / "t.jsonl"
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        with elm.trace.Recorder(path) as rec:
            wrapped = rec.wrap(
                lambda: (0, None),
                lambda m: lambda model: (True, None),
                lambda m: None,
                buf,
                consumer,
            )
            elm.batch(*wrapped, lambda ctx: ([1], False), feed="inline")
    with pytest.raises(elm.trace.Divergence) as raised:
        elm.trace.replay(path, lambda: (0, None), lambda m: lambda model: (1, None))
    assert raised.value.tick == 1 and raised.value.recorded is True and raised.value.rebuilt == 1


@pytest.mark.parametrize(
    "field", ['"model":NaN', '"time":Infinity', '"time":1e300', '"duration":-5']
)
def test_numbers_the_recorder_never_writes_are_refused(
    elm: ModuleType, tmp_path: Path, field: str
) -> None:
    name = field.split(":")[0]
    record = {
        "seq": 0,
        "kind": "init",
        "time": 1.0,
        "message": None,
        "produced": [],
        "model": 0,
        "error": None,
        "duration": 0.1,
    }
    text = json.dumps(record)
    text = text.replace(f"{name}: {json.dumps(record[name.strip(chr(34))])}", field)
    path = tmp_path / "t.jsonl"
    path.write_text(text + "\n")
    with pytest.raises(elm.trace.TraceFileError, match="line 1"):
        list(elm.trace.read(path))

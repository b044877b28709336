"""``Recorder``: one JSON line per tick of the loop whose callbacks it wraps.

Nothing in the cores knows about it: the recorder sees a tick through the five
callbacks it hands back, in the order a tick calls them (docs/contract.md#run):

- first tick: ``init()`` (ours, or one that ``aggregate`` or a supervisor put
  in its place, which we do not see), ``view(model)``, then ``put``;
- later ticks: ``get()``, ``update(message)`` unless the message is ``None``,
  ``view(model)``, ``put``, ``commit()``; or ``rollback()`` if anything raised.

A batch wraps *our* consumer, so its private markers pass through our ``get``
and ``commit``, and its marker and page puts through our ``put``. None of them
comes between a ``view`` and the end of its tick: a commit with no view since
the last ``get`` committed a marker, and a put counts as the tick's output only
after the tick's view, on the loop's own thread (the feeder thread puts too).
So no marker is ever recorded, and the tick's message is the one that reached
``update``.
"""

from __future__ import annotations

import os
import sys
import threading
import time
from typing import TYPE_CHECKING, Any, Generic

from .. import _validate as check
from ..typing import Init, Model, Msg, Update, View
from ._codec import EncodeError, codec_arg, encode_json

if TYPE_CHECKING:
    from .._core_py import Context
    from ..typing import Consumer, Producer

_get_ident = threading.get_ident
_clock = time.perf_counter

# Where the loop is: between ticks, in a first tick (init's, or a start from a
# model made elsewhere), or in a later tick (a get has returned).
_IDLE, _FIRST, _TICK = 0, 1, 2


class Recorder:
    """Records every tick of one loop to ``path``, one JSON line each.

    ``codec`` turns messages and models into JSON values (the default,
    :class:`JSONCodec`, takes them as they are). The file is created, or
    truncated, at once. Each line is written with one ``write`` as its tick
    ends, so a crash of the process leaves only complete lines behind. Use it
    as a context manager, or call :meth:`close` once the loop has returned.

    A recorder follows one loop at a time: hand the callbacks from
    :meth:`wrap` to one ``run``, ``batch`` or ``aggregate``, and call it again
    (or reuse them) for the next loop only once that one has returned.
    """

    __slots__ = (
        "_path",
        "_codec",
        "_file",
        "_lock",
        "_closed",
        "_broken",
        "_size",
        "_wall0",
        "_perf0",
        "_seq",
        "_phase",
        "_kind",
        "_thread",
        "_start",
        "_message",
        "_viewed",
        "_model",
        "_produced",
    )

    def __init__(self, path: str | os.PathLike[str], *, codec: Any = None) -> None:
        if not isinstance(path, (str, os.PathLike)):
            raise TypeError(f"path must be a str or an os.PathLike, got {type(path).__name__}")
        self._codec = codec_arg(codec)
        self._path = os.fspath(path)
        # Unbuffered: a line goes to the operating system in one write as its
        # tick ends, whole; nothing waits in a buffer for a crash to cut short.
        self._file = open(self._path, "wb", buffering=0)  # closed by close()
        self._lock = threading.Lock()  # close() from another thread against a write
        self._closed = False
        self._broken: BaseException | None = None  # a committed tick's line failed to write
        self._size = 0  # bytes written: where a line that fails is taken back to
        # Tick times are wall-clock seconds, read through the monotonic clock
        # (one clock call a tick, and no jumps within a trace).
        self._wall0 = time.time()
        self._perf0 = _clock()
        self._seq = 0
        self._phase = _IDLE
        self._kind = "tick"
        self._thread: int | None = None
        self._start = 0.0
        self._message: Any = None
        self._viewed = False
        self._model: Any = None
        self._produced: tuple[Any, ...] = ()

    @property
    def path(self) -> str:
        """The trace file's path."""
        return self._path

    @property
    def ticks(self) -> int:
        """How many lines (ticks, failed ones included) have been written."""
        return self._seq

    def wrap(
        self,
        init: Init[Model, Msg],
        update: Update[Model, Msg],
        view: View[Model],
        producer: Producer[Msg],
        consumer: Consumer[Msg],
    ) -> tuple[Init[Model, Msg], Update[Model, Msg], View[Model], Producer[Msg], Consumer[Msg]]:
        """The five callbacks, wrapped to record each tick; pass them to any mode.

        Checks its arguments as the modes do (``TypeError`` naming the one at
        fault). The wrapped producer and consumer hand everything through to
        the originals, which stay reachable as their ``__wrapped__``.
        """
        check.program_args(init, update, view, producer, consumer)
        return (
            _recorded_init(self, init),
            _recorded_update(self, update),
            _recorded_view(self, view),
            _RecordedProducer(self, producer),
            _RecordedConsumer(self, consumer),
        )

    def close(self, error: BaseException | None = None) -> None:
        """Close the file (idempotent).

        A first tick that began but never finished (its commands or the core
        raised, where no wrapped callback sees it) is written as failed first,
        with ``error`` when given (``__exit__`` passes the exception that left
        the ``with`` block).
        """
        if self._closed:
            return
        try:
            if self._phase == _FIRST:
                self._write_failed(error if error is not None else _Incomplete())
        finally:
            with self._lock:
                self._closed = True
                self._file.close()

    def __enter__(self) -> Recorder:
        return self

    def __exit__(self, exc_type: object, exc: BaseException | None, tb: object) -> None:
        self.close(exc)

    def __repr__(self) -> str:
        state = " closed" if self._closed else ""
        return f"<elmstate.trace.Recorder {self._path!r} ticks={self._seq}{state}>"

    # ------------------------------------------------------------ tick bookkeeping

    def _begin(self, phase: int, kind: str) -> None:
        if self._phase == _FIRST:
            self._write_failed(_Incomplete())  # a stale first tick: say so, then go on
        self._phase = phase
        self._kind = kind
        self._thread = _get_ident()
        self._start = _clock()
        self._message = None
        self._viewed = False
        self._model = None
        self._produced = ()

    def _line(self) -> str:
        """The tick's line up to its duration (unclosed); raises EncodeError, writes nothing.

        Made before the tick's last step (commit, or a first tick's put), so a
        tick whose line cannot be written fails, and rolls back."""
        codec, seq = self._codec, self._seq
        message, produced, model = self._message, self._produced, self._model
        if codec is not None:
            message = _encode(codec, message, seq, "message")
            produced = tuple(_encode(codec, m, seq, "produced") for m in produced)
            model = _encode(codec, model, seq, "model")
        try:
            # The fixed fields by format: json's encoder writes the same text, at
            # twice the cost of the whole format (bench/trace.py).
            return (
                f'{{"seq":{seq},"kind":"{self._kind}",'
                f'"time":{self._wall0 + (self._start - self._perf0)!r},'
                f'"message":{encode_json(message)},"produced":{encode_json(produced)},'
                f'"model":{encode_json(model)},"error":null'
            )
        except (TypeError, ValueError, RecursionError) as exc:
            raise _which(seq, message, produced, model, exc) from exc

    def _finish(self, text: str) -> None:
        """The tick succeeded: write its line with its duration."""
        duration = _clock() - self._start
        self._phase = _IDLE
        self._viewed = False
        self._write(f'{text},"duration":{duration!r}}}\n')

    def _write_failed(self, exc: BaseException) -> None:
        """Write the current tick as failed: its message and output as far as they
        can be encoded, no model (the loop rolls the tick back), and the error."""
        duration = _clock() - self._start
        codec, seq = self._codec, self._seq
        data = {
            "seq": seq,
            "kind": self._kind,
            "time": self._wall0 + (self._start - self._perf0),
            "message": _safe(codec, self._message),
            "produced": [_safe(codec, m) for m in self._produced],
            "model": None,
            "error": _error(exc),
            "duration": duration,
        }
        self._phase = _IDLE
        self._viewed = False
        self._write(encode_json(data) + "\n")

    def _write(self, line: str) -> None:
        data = line.encode()
        with self._lock:
            if self._closed:
                raise ValueError(f"elmstate.trace: the Recorder for {self._path!r} is closed")
            if self._broken is not None:
                raise self._broken  # a tick's line is missing: no line may follow the gap
            where = self._size
            try:
                written = self._file.write(data) or 0
                if written < len(data):  # a regular file takes it whole; else retry the rest
                    rest = memoryview(data)[written:]
                    while rest:
                        rest = rest[self._file.write(rest) or 0 :]
            except BaseException:
                # Disk full, file too large: take back what went out, so that the
                # file still ends with a whole line (best effort).
                try:
                    self._file.truncate(where)
                    self._file.seek(where)
                except OSError:
                    pass
                raise
            self._size = where + len(data)
            self._seq += 1

    def _finish_committed(self, text: str) -> None:
        """The tick committed: write its line, and never raise — the loop would take
        a raise for a failed commit and deliver the message again (supervise would
        apply it twice, or lose it). A write that fails is raised by the next get,
        before it reads anything, and by every later write: the file has a gap."""
        try:
            self._finish(text)
        except Exception as exc:
            self._broken = exc


class _Incomplete(Exception):
    """Stands for the unknown error of a first tick that never finished."""

    def __init__(self) -> None:
        super().__init__(
            "the tick did not finish: the loop raised outside the recorded callbacks "
            "(in a command, or a check of the core)"
        )


def _encode(codec: Any, obj: Any, seq: int, part: str) -> Any:
    if obj is None:
        return None  # None is null, both ways: the codec never sees it
    try:
        value = codec.encode(obj)
    except Exception as exc:
        raise EncodeError(seq, part, f"{type(codec).__name__}.encode raised {exc!r}") from exc
    if value is None:
        raise EncodeError(
            seq,
            part,
            f"{type(codec).__name__}.encode returned None for {obj!r:.100} (null is kept for None)",
        )
    return value


def _which(seq: int, message: Any, produced: Any, model: Any, exc: Exception) -> EncodeError:
    """Name the part of a line that is no JSON value."""
    for part, value in (("message", message), ("produced", produced), ("model", model)):
        try:
            encode_json(value)
        except (TypeError, ValueError, RecursionError) as own:
            return EncodeError(seq, part, f"{own} (in {value!r:.100})")
    return EncodeError(seq, "line", str(exc))


def _safe(codec: Any, obj: Any) -> Any:
    """``obj`` as a JSON value, or None when it cannot be one (a failed tick's line)."""
    try:
        value = obj if codec is None or obj is None else codec.encode(obj)
        encode_json(value)
    except Exception:
        return None
    return value


def _error(exc: BaseException) -> dict[str, str]:
    kind = type(exc)
    name = "incomplete" if kind is _Incomplete else kind.__qualname__
    if kind.__module__ not in ("builtins", __name__):
        name = f"{kind.__module__}.{name}"
    try:
        text = str(exc)
    except Exception:
        text = "<str() of the error raised>"
    return {"type": name, "message": text}


# --------------------------------------------------------------- the wrappers


def _recorded_init(rec: Recorder, init: Init[Model, Msg]) -> Init[Model, Msg]:
    def recorded_init() -> Any:
        rec._begin(_FIRST, "init")
        try:
            return init()
        except BaseException as exc:
            rec._write_failed(exc)  # a first tick never rolls back: no later chance
            raise

    recorded_init.__wrapped__ = init  # type: ignore[attr-defined]
    return recorded_init


def _recorded_update(rec: Recorder, update: Update[Model, Msg]) -> Update[Model, Msg]:
    def recorded_update(message: Any) -> Any:
        rec._message = message  # the tick's message: what reached update
        return update(message)

    recorded_update.__wrapped__ = update  # type: ignore[attr-defined]
    return recorded_update


def _recorded_view(rec: Recorder, view: View[Model]) -> View[Model]:
    def recorded_view(model: Any) -> Any:
        phase = rec._phase
        # No tick under way (or a first tick that already had its view): a loop
        # started from a model that our init did not make (aggregate's stored
        # model, a supervisor's restart).
        if phase == _IDLE or (phase == _FIRST and rec._viewed):
            rec._begin(_FIRST, "start")
        rec._model = model  # the tick's model: what view saw
        rec._viewed = True
        try:
            return view(model)
        except BaseException as exc:
            if rec._phase == _FIRST:
                rec._write_failed(exc)  # no rollback follows a first tick
            raise

    recorded_view.__wrapped__ = view  # type: ignore[attr-defined]
    return recorded_view


class _RecordedProducer(Generic[Msg]):
    """The producer, recording the messages that a tick's commands put."""

    __slots__ = ("_rec", "_put", "__wrapped__")

    def __init__(self, rec: Recorder, producer: Producer[Msg]) -> None:
        self._rec = rec
        self._put = producer.put
        self.__wrapped__ = producer

    def put(self, ctx: Context | None, /, *values: Msg) -> object:
        rec = self._rec
        # After the tick's view, on the loop's thread: the tick's own output.
        # Anything else is a batch's page or marker, or the feeder thread's.
        if rec._viewed and _get_ident() == rec._thread:
            rec._produced = values
            if rec._phase == _FIRST:  # a first tick ends here: it has no commit
                try:
                    text = rec._line()
                    result = self._put(ctx, *values)
                except BaseException as exc:
                    rec._write_failed(exc)
                    raise
                rec._finish(text)
                return result
        return self._put(ctx, *values)

    def __repr__(self) -> str:
        return f"<recorded {self.__wrapped__!r}>"


class _RecordedConsumer(Generic[Msg]):
    """The consumer: a get starts a tick, its commit ends it, a rollback fails it."""

    __slots__ = ("_rec", "_get", "_commit", "_rollback", "__wrapped__")

    def __init__(self, rec: Recorder, consumer: Consumer[Msg]) -> None:
        self._rec = rec
        self._get = consumer.get
        self._commit = consumer.commit
        self._rollback = consumer.rollback
        self.__wrapped__ = consumer

    def get(self, ctx: Context | None, /) -> Msg:
        rec = self._rec
        if rec._broken is not None:
            raise rec._broken  # the last committed tick's line could not be written
        message = self._get(ctx)
        if rec._phase == _TICK and _get_ident() != rec._thread:
            raise RuntimeError(
                "elmstate.trace: two loops share one Recorder; it records one loop at a time"
            )
        rec._begin(_TICK, "tick")
        return message

    def commit(self) -> object:
        rec = self._rec
        if not rec._viewed:  # a marker's commit (batch), not a tick's
            rec._phase = _IDLE
            return self._commit()
        text = rec._line()  # before the commit: a line that cannot be encoded fails the tick
        result = self._commit()
        rec._finish_committed(text)
        return result

    def rollback(self) -> object:
        rec = self._rec
        failure: Exception | None = None
        # Only a tick whose message was read; a get that raised (ctx ended) or a
        # marker's failed commit ends the loop, but read nothing.
        if rec._phase == _TICK and (rec._message is not None or rec._viewed):
            exc = sys.exc_info()[1]  # rollback runs while the loop handles the error
            try:
                rec._write_failed(exc if exc is not None else _Incomplete())
            except Exception as own:  # the consumer rolls back all the same
                failure = own
        rec._phase = _IDLE
        rec._viewed = False
        result = self._rollback()
        if failure is not None:
            raise failure
        return result

    def __repr__(self) -> str:
        return f"<recorded {self.__wrapped__!r}>"


check.register(check.PRODUCERS, _RecordedProducer)
check.register(check.CONSUMERS, _RecordedConsumer)

"""``replay``: rebuild a recorded loop's model from its trace, and check it tick by tick."""

from __future__ import annotations

import json
import os
from typing import Any, NamedTuple

from .. import _validate as check
from ..typing import Init, Model, Msg, Update
from ._codec import codec_arg, encode_json
from ._file import TraceFileError, read


class Divergence(Exception):
    """The rebuilt model differs from the recorded one at tick ``tick``.

    ``recorded`` is the model the trace holds (decoded by the codec), ``rebuilt``
    the one that ``init`` and ``update`` made from the recorded messages;
    ``line`` is the tick's line in the file.
    """

    def __init__(self, path: str, tick: int, line: int, recorded: Any, rebuilt: Any) -> None:
        super().__init__(
            f"{path}, line {line}: tick {tick} diverged: recorded model {recorded!r:.300}, "
            f"rebuilt {rebuilt!r:.300}"
        )
        self.path = path
        self.tick = tick
        self.line = line
        self.recorded = recorded
        self.rebuilt = rebuilt


class Replayed(NamedTuple):
    model: Any
    ticks: int  # lines read
    applied: int  # ticks whose message went through update
    skipped: int  # failed ticks, not applied


_NOTHING: Any = object()


def replay(
    path: str | os.PathLike[str],
    init: Init[Model, Msg],
    update: Update[Model, Msg],
    *,
    codec: Any = None,
) -> Model:
    """Rebuild the model from the trace at ``path``, with commands skipped; return it.

    Ticks are replayed in order: an ``init`` tick calls ``init()``; a ``start``
    tick (a loop that began from a model made elsewhere, as ``aggregate`` does
    from a stored model) takes the recorded model as it is; every other tick
    hands its recorded message to ``update`` and applies the transform. Failed
    ticks are not applied: the loop rolled them back. Commands are never run:
    the messages they produced were recorded as the ticks that read them.

    After each tick the rebuilt model, encoded by ``codec``, must equal the
    recorded one, else :class:`Divergence` is raised for that tick. A
    malformed file raises :class:`TraceFileError`; what ``init``, ``update``
    or a transform raises propagates.
    """
    return _replay(path, init, update, codec).model  # type: ignore[no-any-return]


def _replay(path: Any, init: Any, update: Any, codec: Any) -> Replayed:
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or an os.PathLike, got {type(path).__name__}")
    check.callable_arg("init", init)
    check.callable_arg("update", update)
    codec = codec_arg(codec)
    name = os.fspath(path)
    model = _NOTHING
    ticks = applied = skipped = 0
    for tick in read(name):
        ticks += 1
        if tick.error is not None:
            skipped += 1
            continue
        if tick.kind == "start":
            model = _decode(codec, tick.model)
            continue
        if tick.kind == "init":
            model, _ = check.pair("init", init(), "(model, command)")
        else:
            if model is _NOTHING:
                raise TraceFileError(
                    name, tick.line, "a tick before the loop's first (init or start) tick"
                )
            message = _decode(codec, tick.message)
            if message is not None:
                applied += 1
                transform = update(message)
                if transform is not None:
                    if not callable(transform):
                        raise check.not_transform(transform)
                    model, _ = check.pair("transform", transform(model), "(model, command)")
        if not _same(_normal(codec, model), tick.model):
            raise Divergence(name, tick.seq, tick.line, _decode(codec, tick.model), model)
    if model is _NOTHING:
        raise TraceFileError(
            name, None, "no tick began a loop (an empty trace?): nothing to rebuild"
        )
    return Replayed(model, ticks, applied, skipped)


def _decode(codec: Any, value: Any) -> Any:
    return value if codec is None or value is None else codec.decode(value)


def _same(rebuilt: Any, recorded: Any) -> bool:
    """Equal as JSON: ``1`` is not ``1.0`` nor ``true`` (Python's == says they are)."""
    if rebuilt is _NOTHING:
        return False
    return json.dumps(rebuilt, sort_keys=True) == json.dumps(recorded, sort_keys=True)


def _normal(codec: Any, model: Any) -> Any:
    """The model as the trace would hold it: encoded, written and read back."""
    if model is None:
        return None
    value = model if codec is None else codec.encode(model)
    try:
        return json.loads(encode_json(value))
    except (TypeError, ValueError):
        return _NOTHING  # no JSON value: it cannot equal the recording

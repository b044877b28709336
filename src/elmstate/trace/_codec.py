"""What a trace holds of messages and models: JSON values, made by a codec.

A codec is any object with ``encode(obj) -> JSON value`` and ``decode(JSON value)
-> obj`` (docs/trace.md#codecs). ``None`` never reaches it: ``None`` is
recorded as JSON ``null`` and read back as ``None``, so an encoding of ``None``
for anything else is refused (replay would take it for "no message").
"""

from __future__ import annotations

import json
from typing import Any, Callable, Protocol, runtime_checkable

from .. import _validate as check


@runtime_checkable
class Codec(Protocol):
    """How messages and models become JSON values in a trace, and back."""

    def encode(self, obj: Any, /) -> Any:
        """A JSON value (dict, list, str, int, float, bool; not ``None``) for ``obj``."""
        ...

    def decode(self, value: Any, /) -> Any:
        """The object that ``encode`` turned into ``value``."""
        ...


class JSONCodec:
    """The default codec: messages and models that are JSON values already.

    ``encode`` and ``decode`` return what they are given. A value must be made of
    dicts with ``str`` keys, lists, strings, numbers (finite), booleans and
    ``None``; a tuple is written as a list, and read back as one.
    """

    def encode(self, obj: Any) -> Any:
        return obj

    def decode(self, value: Any) -> Any:
        return value

    def __repr__(self) -> str:
        return "JSONCodec()"


class EncodeError(TypeError):
    """A message or model of a tick could not be written to the trace.

    ``tick`` is the tick's sequence number and ``part`` what failed:
    ``"message"``, ``"produced"`` (a message put by the tick's commands) or
    ``"model"``. The codec's (or ``json``'s) own error is the ``__cause__``.
    Raised inside the loop, it fails that tick, which rolls back.
    """

    def __init__(self, tick: int, part: str, detail: str) -> None:
        super().__init__(f"elmstate.trace: the {part} of tick {tick} cannot be recorded: {detail}")
        self.tick = tick
        self.part = part


# One encoder for every line. allow_nan=False: NaN and infinities are not JSON
# (and NaN would never compare equal in a replay).
ENCODER = json.JSONEncoder(ensure_ascii=False, allow_nan=False, separators=(",", ":"))


def _refuse(obj: Any) -> Any:
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serializable")


def _c_encoder() -> Callable[[Any], str] | None:
    """json's C encoder, made once: ``JSONEncoder.encode`` makes a new one on every
    call, which was two thirds of a recorded tick's cost. Its constructor is
    private to json (the same nine arguments from 3.9 to 3.13): if it is
    missing or has changed, the plain encoder is used."""
    make = getattr(json.encoder, "c_make_encoder", None)
    basestring = getattr(json.encoder, "c_encode_basestring", None)
    if make is None or basestring is None:
        return None
    try:
        # markers=None: no cycle check; a cycle ends in RecursionError instead.
        encoder = make(None, _refuse, basestring, None, ":", ",", False, False, False)
        sample = {"a": [1, 2.5, None, True, "é"], "b": (3,)}
        if "".join(encoder(sample, 0)) != ENCODER.encode(sample):
            return None
    except Exception:
        return None

    def encode(obj: Any) -> str:
        return "".join(encoder(obj, 0))

    return encode


encode_json: Callable[[Any], str] = _c_encoder() or ENCODER.encode


def codec_arg(codec: Any) -> Any:
    """``codec``, checked; ``None`` for the default (no calls at all)."""
    if codec is None or type(codec) is JSONCodec:
        return None
    check.has_methods("codec", codec, "encode", "decode")
    return codec

"""Trace and replay: record every tick of a loop, rebuild its model from the record.

::

    with trace.Recorder("ticks.jsonl") as rec:
        init, update, view, producer, consumer = rec.wrap(init, update, view, producer, consumer)
        elmstate.batch(init, update, view, producer, consumer, fetcher)
    model = trace.replay("ticks.jsonl", init, update)

The cores know nothing of it: a loop without a recorder runs exactly as before.
``python -m elmstate.trace show FILE`` prints a trace's ticks and times,
``python -m elmstate.trace replay FILE --program MODULE:NAME`` replays it.
See docs/trace.md.
"""

from __future__ import annotations

from ._codec import Codec, EncodeError, JSONCodec
from ._file import Tick, TraceFileError, read
from ._recorder import Recorder
from ._replay import Divergence, replay

# Errors and records name the public module, not the private one they live in.
for _cls in (Codec, EncodeError, JSONCodec, Tick, TraceFileError, Recorder, Divergence):
    _cls.__module__ = __name__
del _cls

__all__ = [
    "Codec",
    "Divergence",
    "EncodeError",
    "JSONCodec",
    "Recorder",
    "Tick",
    "TraceFileError",
    "read",
    "replay",
]

"""Reading a trace file back: one checked record per line."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from typing import Any, NamedTuple

KINDS = ("init", "start", "tick")


class TraceFileError(ValueError):
    """A trace file that is not one: malformed, cut short, or out of sequence.

    ``path`` is the file and ``line`` the 1-based line at fault (``None`` when the
    fault is the file as a whole, such as a file with no first tick).
    """

    def __init__(self, path: str, line: int | None, detail: str) -> None:
        where = f"{path}, line {line}" if line is not None else path
        super().__init__(f"{where}: {detail}")
        self.path = path
        self.line = line


class Tick(NamedTuple):
    """One line of a trace, as recorded (JSON values, not decoded by a codec).

    ``kind`` is ``"init"`` (``init`` ran), ``"start"`` (the loop began from a
    model it did not make: ``aggregate``'s stored model) or ``"tick"`` (a
    message was read). ``time`` is when the tick began (seconds since the
    epoch), ``duration`` how long it took (seconds). ``error`` is ``None``, or
    ``{"type": ..., "message": ...}`` for a tick that raised (its ``model`` is
    then ``None``: the loop rolled it back). ``line`` is its line number.
    """

    seq: int
    kind: str
    time: float
    duration: float
    message: Any
    produced: list[Any]
    model: Any
    error: dict[str, str] | None
    line: int


def read(path: str | os.PathLike[str]) -> Iterator[Tick]:
    """Yield the ticks recorded in ``path``, in order, checking each line.

    Raises :class:`TraceFileError` naming the file and line for a line that is
    not a complete tick record (a file cut short mid-line, say), or whose
    sequence number does not follow the one before.
    """
    if not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"path must be a str or an os.PathLike, got {type(path).__name__}")
    return _ticks(os.fspath(path))


def _ticks(name: str) -> Iterator[Tick]:
    expected = 0
    with open(name, "rb") as file:
        for number, raw in enumerate(file, 1):
            tick = _parse(name, number, raw)
            if tick.seq != expected:
                raise TraceFileError(
                    name,
                    number,
                    f"tick {tick.seq} where tick {expected} was due (a line is missing)",
                )
            expected += 1
            yield tick


def _not_json(constant: str) -> Any:
    """json.loads takes NaN and Infinity, which are not JSON (the recorder never writes them)."""
    raise ValueError(f"{constant} is not JSON")


def _parse(path: str, number: int, raw: bytes) -> Tick:
    cut = not raw.endswith(b"\n")
    try:
        data = json.loads(raw, parse_constant=_not_json)
    except ValueError as exc:  # UnicodeDecodeError and JSONDecodeError alike
        if cut:
            raise TraceFileError(
                path, number, "the file ends in the middle of this line (was it cut short?)"
            ) from None
        detail = "an empty line" if not raw.strip() else f"not JSON ({exc})"
        raise TraceFileError(path, number, detail) from None
    if not isinstance(data, dict):
        raise TraceFileError(path, number, f"a JSON {type(data).__name__}, not a tick record")
    missing = [key for key in Tick._fields[:-1] if key not in data]
    if missing:
        raise TraceFileError(path, number, f"a tick record without {', '.join(missing)}")
    seq, kind, error = data["seq"], data["kind"], data["error"]
    numbers = (data["time"], data["duration"])
    problem = None
    if type(seq) is not int or seq < 0:
        problem = f"seq must be an integer >= 0, got {seq!r:.50}"
    elif kind not in KINDS:
        problem = f"kind must be one of {', '.join(KINDS)}, got {kind!r:.50}"
    elif any(isinstance(n, bool) or not isinstance(n, (int, float)) for n in numbers):
        problem = f"time and duration must be numbers, got {numbers!r:.100}"
    elif not (abs(numbers[0]) < 1e11 and 0 <= numbers[1] < 1e11):
        problem = f"time must be seconds since the epoch and duration >= 0, got {numbers!r:.100}"
    elif not isinstance(data["produced"], list):
        problem = f"produced must be a list, got {data['produced']!r:.50}"
    elif error is not None and not (
        isinstance(error, dict)
        and isinstance(error.get("type"), str)
        and isinstance(error.get("message"), str)
    ):
        problem = f"error must be null or a {{type, message}} object, got {error!r:.100}"
    if problem is not None:
        raise TraceFileError(path, number, problem)
    return Tick(
        seq,
        kind,
        float(data["time"]),
        float(data["duration"]),
        data["message"],
        data["produced"],
        data["model"],
        error,
        number,
    )

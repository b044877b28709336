"""``python -m elmstate.trace``: ``show`` a trace's ticks and times, ``replay`` one.

Exit codes: 0 success; 1 a divergence, or a file that cannot be read as a
trace; 2 a usage error (arguments, a program or codec that cannot be loaded).
"""

from __future__ import annotations

import argparse
import importlib
import json
import os
import statistics
import sys
from collections.abc import Sequence
from datetime import datetime
from typing import Any, NoReturn

from ._file import Tick, TraceFileError, read
from ._replay import Divergence, _replay

PROG = "python -m elmstate.trace"
OK, FAILED, USAGE = 0, 1, 2
WIDTH = 60  # characters of a message shown on a tick's line


class _Exit(Exception):
    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=PROG, description="Show or replay an elmstate trace.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    show = commands.add_parser("show", help="print every tick's time, and a summary")
    show.add_argument("file", metavar="FILE", help="a trace written by elmstate.trace.Recorder")
    show.add_argument("--top", type=int, default=5, help="how many slowest ticks to list")
    show.add_argument("--summary", action="store_true", help="print the summary only")
    again = commands.add_parser("replay", help="rebuild the model from a trace and check it")
    again.add_argument("file", metavar="FILE", help="a trace written by elmstate.trace.Recorder")
    again.add_argument(
        "--program",
        required=True,
        metavar="MODULE:NAME",
        help="an object with init and update attributes (an elmstate.Program, or a module)",
    )
    again.add_argument(
        "--codec", metavar="MODULE:NAME", help="the codec the trace was recorded with"
    )
    args = parser.parse_args(argv)
    if args.command == "show" and args.top < 0:
        parser.error("--top must be >= 0")
    try:
        if args.command == "show":
            return _show(args.file, args.top, args.summary)
        return _replay_command(args.file, args.program, args.codec)
    except _Exit as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return exc.code
    except (TraceFileError, OSError) as exc:
        print(f"{PROG}: {exc}", file=sys.stderr)
        return FAILED


def _show(path: str, top: int, summary_only: bool) -> int:
    ticks: list[Tick] = []
    if not summary_only:
        print(f"{'seq':>6}  {'kind':<5}  {'time':<26}  {'duration':>11}  message")
    for tick in read(path):
        ticks.append(tick)
        if not summary_only:
            print(_row(tick))
    print(f"{path}: {len(ticks)} ticks")
    if not ticks:
        return OK
    failed = sum(1 for t in ticks if t.error is not None)
    firsts = sum(1 for t in ticks if t.kind != "tick")
    messages = sum(1 for t in ticks if t.kind == "tick" and t.message is not None)
    print(
        f"  ticks: {len(ticks)} ({firsts} first, {messages} with a message, "
        f"{len(ticks) - firsts - messages} without, {failed} failed)"
    )
    span = max(t.time + t.duration for t in ticks) - ticks[0].time
    rate = f"{messages / span:,.0f}" if span > 0 else "n/a"
    print(f"  span: {span:.6f} s (first tick's start to last tick's end)")
    print(f"  messages/s: {rate}")
    durations = [t.duration for t in ticks]
    print(
        f"  tick time: total {sum(durations):.6f} s, median {_us(statistics.median(durations))}, "
        f"max {_us(max(durations))}"
    )
    if top:
        print(f"  slowest {min(top, len(ticks))}:")
        for tick in sorted(ticks, key=lambda t: t.duration, reverse=True)[:top]:
            print(f"    #{tick.seq} {_us(tick.duration)} {tick.kind} {_what(tick)}".rstrip())
    return OK


def _row(tick: Tick) -> str:
    when = datetime.fromtimestamp(tick.time).isoformat(sep=" ", timespec="microseconds")
    row = f"{tick.seq:>6}  {tick.kind:<5}  {when:<26}  {_us(tick.duration):>11}  {_what(tick)}"
    return row.rstrip()


def _what(tick: Tick) -> str:
    text = "" if tick.message is None else _short(tick.message)
    if tick.error is not None:
        text = f"{text}  ! {tick.error['type']}: {tick.error['message']}".strip()
    return text


def _short(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False, separators=(",", ":"))
    return text if len(text) <= WIDTH else text[: WIDTH - 3] + "..."


def _us(seconds: float) -> str:
    return f"{seconds * 1e6:,.1f} us"


def _replay_command(path: str, program_spec: str, codec_spec: str | None) -> int:
    program = _load(program_spec, "--program")
    for attribute in ("init", "update"):
        if not callable(getattr(program, attribute, None)):
            raise _Exit(
                USAGE,
                f"--program {program_spec}: a {type(program).__name__} without a callable "
                f"{attribute} (give an object with init and update, such as an elmstate.Program)",
            )
    codec = None
    if codec_spec is not None:
        codec = _load(codec_spec, "--codec")
        for method in ("encode", "decode"):
            if not callable(getattr(codec, method, None)):
                raise _Exit(
                    USAGE, f"--codec {codec_spec}: a {type(codec).__name__} without {method}()"
                )
    try:
        done = _replay(path, program.init, program.update, codec)
    except Divergence as exc:
        print(f"{PROG}: divergence: {exc}", file=sys.stderr)
        return FAILED
    print(
        f"{path}: {done.ticks} ticks replayed ({done.applied} messages applied, "
        f"{done.skipped} failed ticks skipped)"
    )
    print(f"final model: {done.model!r}")
    return OK


def _load(spec: str, option: str) -> Any:
    """``MODULE:NAME`` (a dotted NAME reaches into objects), or a ``MODULE`` itself."""
    module_name, _, attribute = spec.partition(":")
    if not module_name or (_ and not attribute):
        raise _Exit(USAGE, f"{option} must be MODULE:NAME or MODULE, got {spec!r}")
    try:
        module = importlib.import_module(module_name)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (
            module_name == exc.name or module_name.startswith(exc.name + ".")
        ):
            _fail(
                f"{option}: cannot import {module_name!r}: no module named {exc.name!r} "
                f"(searched the current directory {os.getcwd()} and sys.path)"
            )
        _fail(f"{option}: importing {module_name!r} raised {exc!r}")
    except Exception as exc:  # the module's own code raised
        _fail(f"{option}: importing {module_name!r} raised {exc!r}")
    value: Any = module
    for part in attribute.split(".") if attribute else ():
        try:
            value = getattr(value, part)
        except AttributeError:
            _fail(f"{option}: {module_name!r} ({module.__file__}) has no attribute {attribute!r}")
    return value


def _fail(text: str) -> NoReturn:
    raise _Exit(USAGE, text) from None

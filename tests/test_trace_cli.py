"""``python -m elmstate.trace show|replay``, run as a user would: a subprocess per call
(docs/trace.md#the-command-line). Exit codes: 0 ok, 1 divergence or bad file, 2 usage."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest
from _helpers import subprocess_env

PROGRAM = '''
"""A program for the trace CLI tests: int messages summed; tuples through a codec."""


def init():
    return 0, None


def update(message):
    if message == "fail":
        return lambda model: 1 / 0
    if isinstance(message, tuple):
        message = message[0]
    return lambda model: (model + message, None)


class Program:  # any object with init and update will do
    def __init__(self, init, update):
        self.init = init
        self.update = update


program = Program(init, update)
drifting = Program(init, lambda message: lambda model: (model + 2 * message, None))
half = type("Half", (), {"init": staticmethod(init)})()


class TupleCodec:
    def encode(self, obj):
        return {"tuple": list(obj)} if isinstance(obj, tuple) else obj

    def decode(self, value):
        return tuple(value["tuple"]) if isinstance(value, dict) else value


codec = TupleCodec()
'''


class Trace:
    def __init__(self, elm: ModuleType, tmp_path: Path) -> None:
        self.elm = elm
        self.dir = tmp_path
        (tmp_path / "prog.py").write_text(textwrap.dedent(PROGRAM))
        sys.path.insert(0, str(tmp_path))
        try:
            import prog
        finally:
            sys.path.remove(str(tmp_path))
            sys.modules.pop("prog", None)
        self.prog: Any = prog

    def record(self, name: str, *messages: Any, codec: Any = None) -> Path:
        elm, path = self.elm, self.dir / name
        with elm.trace.Recorder(path, codec=codec) as rec, elm.Buffer() as buf:
            with buf.new_consumer() as consumer:
                wrapped = rec.wrap(self.prog.init, self.prog.update, print, buf, consumer)
                try:
                    elm.batch(*wrapped, lambda ctx: (list(messages), False), feed="inline")
                except ZeroDivisionError:
                    pass  # a failed tick, recorded
        return path

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "elmstate.trace", *args],
            cwd=self.dir,
            env=subprocess_env(self.elm),
            capture_output=True,
            text=True,
            timeout=60,
        )


@pytest.fixture
def t(elm: ModuleType, tmp_path: Path) -> Trace:
    return Trace(elm, tmp_path)


def test_show(t: Trace) -> None:
    path = t.record("sums.jsonl", 1, 2, 3, 4, "fail")
    shown = t.cli("show", str(path))
    assert shown.returncode == 0, shown.stderr
    assert shown.stderr == ""
    out = shown.stdout.splitlines()
    assert out[0].split() == ["seq", "kind", "time", "duration", "message"]
    rows = out[1:7]
    assert [row.split()[:2] for row in rows] == [
        ["0", "init"],
        ["1", "tick"],
        ["2", "tick"],
        ["3", "tick"],
        ["4", "tick"],
        ["5", "tick"],
    ]
    assert all(" us " in row + " " for row in rows)
    assert rows[1].endswith("us  1")
    assert rows[5].endswith('"fail"  ! ZeroDivisionError: division by zero')
    summary = "\n".join(out[7:])
    assert f"{path}: 6 ticks" in summary
    assert "ticks: 6 (1 first, 5 with a message, 0 without, 1 failed)" in summary
    assert "messages/s: " in summary
    assert "tick time: total " in summary
    assert "slowest 3:" in t.cli("show", str(path), "--top", "3").stdout
    assert len([line for line in out if line.startswith("    #")]) == 5  # --top 5 by default
    brief = t.cli("show", "--summary", "--top", "0", str(path))
    assert brief.returncode == 0
    assert brief.stdout.splitlines()[0] == f"{path}: 6 ticks"
    assert "slowest" not in brief.stdout


def test_replay(t: Trace) -> None:
    path = t.record("sums.jsonl", 1, 2, 3, "fail", 4)
    done = t.cli("replay", str(path), "--program", "prog:program")
    assert done.returncode == 0, done.stderr
    assert done.stdout.splitlines() == [
        f"{path}: 5 ticks replayed (3 messages applied, 1 failed ticks skipped)",
        "final model: 6",
    ]
    # a module is an object with init and update too
    assert t.cli("replay", str(path), "--program", "prog").stdout.endswith("final model: 6\n")


def test_replay_with_a_codec(t: Trace) -> None:
    path = t.record("tuples.jsonl", (1, "a"), (2, "b"), codec=t.prog.codec)
    without = t.cli("replay", str(path), "--program", "prog:program")
    assert without.returncode != 0  # dicts reach update: its own error, a traceback
    done = t.cli("replay", str(path), "--program", "prog:program", "--codec", "prog:codec")
    assert done.returncode == 0, done.stderr
    assert done.stdout.endswith("final model: 3\n")


def test_replay_divergence(t: Trace) -> None:
    path = t.record("sums.jsonl", 1, 2)
    diverged = t.cli("replay", str(path), "--program", "prog:drifting")
    assert diverged.returncode == 1
    assert diverged.stdout == ""
    assert f"divergence: {path}, line 2: tick 1 diverged: recorded model 1, rebuilt 2" in (
        diverged.stderr
    )


def test_bad_files(t: Trace) -> None:
    path = t.record("sums.jsonl", 1, 2, 3)
    data = path.read_bytes()
    path.write_bytes(data[: data.index(b"\n", data.index(b"\n") + 1) + 10])  # line 3 cut
    for args in (["show", str(path)], ["replay", str(path), "--program", "prog:program"]):
        bad = t.cli(*args)
        assert bad.returncode == 1
        assert f"{path}, line 3: the file ends in the middle of this line" in bad.stderr
    missing = t.cli("show", "nowhere.jsonl")
    assert missing.returncode == 1
    assert "nowhere.jsonl" in missing.stderr


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([], "the following arguments are required: COMMAND"),
        (["replay", "x.jsonl"], "the following arguments are required: --program"),
        (["show", "x.jsonl", "--top", "-1"], "--top must be >= 0"),
        (["replay", "x.jsonl", "--program", "prog:"], "must be MODULE:NAME or MODULE"),
        (["replay", "x.jsonl", "--program", "nosuch:program"], "no module named 'nosuch'"),
        (["replay", "x.jsonl", "--program", "prog:nothing"], "has no attribute 'nothing'"),
        (["replay", "x.jsonl", "--program", "prog:half"], "a Half without a callable update"),
        (
            ["replay", "x.jsonl", "--program", "prog:program", "--codec", "prog:program"],
            "a Program without encode()",
        ),
    ],
)
def test_usage(t: Trace, args: list[str], message: str) -> None:
    (t.dir / "x.jsonl").write_text("")
    used = t.cli(*args)
    assert used.returncode == 2
    assert message in used.stderr

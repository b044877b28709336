"""elmstate.typing and the generic Buffer: at run time on both cores, and under mypy."""

from __future__ import annotations

import re
import sys
import textwrap
import types
import typing
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType
from typing import Callable, Optional, TypeVar

import pytest

import elmstate.typing as et

T = TypeVar("T")


@pytest.mark.parametrize("name, arg", [("Buffer", int), ("BufferConsumer", str)])
def test_classes_subscript_to_generic_alias(elm: ModuleType, name: str, arg: type) -> None:
    cls = getattr(elm, name)
    alias = cls[arg]
    assert type(alias) is types.GenericAlias  # the same kind of alias on both cores
    assert alias.__origin__ is cls
    assert alias.__args__ == (arg,)
    assert cls[T].__parameters__ == (T,)
    assert cls[T][arg] == alias


def test_subscripted_buffer_makes_plain_instances(elm: ModuleType) -> None:
    buf = elm.Buffer[int]()
    assert type(buf) is elm.Buffer
    assert isinstance(buf, elm.Buffer)
    with buf, buf.new_consumer() as consumer:
        assert type(consumer) is elm.BufferConsumer
        buf.put(None, 1, 2)
        assert [consumer.get(None), consumer.get(None)] == [1, 2]
        consumer.commit()
    with pytest.raises(TypeError):
        elm.BufferConsumer[int]()  # still only through new_consumer()


def test_buffer_and_consumer_match_the_runtime_protocols(elm: ModuleType) -> None:
    typing = elm.typing
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        assert isinstance(buf, typing.Producer)
        assert isinstance(consumer, typing.Consumer)
        assert not isinstance(buf, typing.Consumer)
    assert isinstance(elm.MemoryStore(), typing.Store)
    assert not isinstance(object(), typing.Store)


def test_versioned_store_protocol_needs_all_four_methods() -> None:
    class Plain:
        def load(self, ctx: object, key: str) -> bytes | None:
            return None

        def store(self, ctx: object, key: str, value: bytes) -> None:
            pass

    class Versioned(Plain):
        def load_versioned(self, ctx: object, key: str) -> tuple[bytes | None, int]:
            return None, 0

        def store_versioned(self, ctx: object, key: str, value: bytes, version: int) -> int:
            return version + 1

    assert isinstance(Versioned(), et.VersionedStore)
    assert isinstance(Versioned(), et.Store)
    assert not isinstance(Plain(), et.VersionedStore)


def test_aliases_subscript_at_run_time() -> None:
    command = Optional[Iterable[Optional[Callable[[], Optional[str]]]]]
    assert et.Command[str] == command
    assert et.Transform[int, str] == Callable[[int], tuple[int, command]]
    assert et.Init[int, str] == Callable[[], tuple[int, command]]
    assert et.View[int] == Callable[[int], object]
    assert et.Transform.__parameters__ == (et.Model, et.Msg)
    assert et.Update.__parameters__ == (et.Model, et.Msg)  # the same order as Transform's
    assert et.Update[int, str].__args__ == (int, str)
    assert et.Hydrator[int].__args__[-1] == tuple[int, et.ReadOnlyModels]
    assert et.Dehydrator[int].__args__[1:] == (str, int, bytes)
    for protocol in (et.Producer, et.Consumer, et.Fetcher):
        assert protocol[int].__origin__ is protocol
    assert set(et.__all__) <= set(dir(et))


# Each "# reveal: X" line must make mypy reveal X (or a dotted name ending in
# .X; "builtins." dropped, as newer mypy does); each "# error: code" line must
# be a mypy error with that code ("# error: any" for any code); any other error
# fails the test.
PROGRAM = """
    from __future__ import annotations

    from typing import Any, Callable, Union

    import elmstate
    from elmstate import aio
    from elmstate.typing import Command, Store, Transform


    def init() -> tuple[int, Command[str]]:
        return 0, None


    def update(msg: str) -> Transform[int, str] | None:
        if not msg:
            return None
        return lambda model: (model + len(msg), elmstate.new_command(msg[1:]))


    def view(model: int) -> None:
        pass


    def fetch(ctx: elmstate.Context) -> tuple[list[str], bool]:
        return ["abc"], False


    def hydrate(ctx: elmstate.Context, key: str, value: bytes) -> tuple[int, None]:
        return int(value), None


    def dehydrate(ctx: elmstate.Context, key: str, model: int) -> bytes:
        return str(model).encode()


    buf = elmstate.Buffer[str]()
    consumer = buf.new_consumer()
    reveal_type(buf)  # reveal: Buffer[str]
    reveal_type(consumer)  # reveal: BufferConsumer[str]
    reveal_type(consumer.get(None))  # reveal: str
    reveal_type(buf.slice())  # reveal: list[str]
    buf.put(None, "fine")
    buf.put(None, 1)  # error: arg-type

    with elmstate.Buffer[int]() as ints:
        reveal_type(ints)  # reveal: Buffer[int]
    reveal_type(elmstate.Buffer())  # reveal: Buffer[Any]

    model = elmstate.batch(init, update, view, buf, consumer, fetch)
    reveal_type(model)  # reveal: int
    stored = elmstate.aggregate(
        init, update, view, buf, consumer, fetch, elmstate.MemoryStore(), hydrate, dehydrate, "k"
    )
    reveal_type(stored)  # reveal: int
    elmstate.batch(init, update, view, ints, ints.new_consumer(), fetch)  # error: any


    class Child:
        pass


    class Parent:
        def __init__(self, child: Child | None) -> None:
            self.child = child


    def lift(command: Command[Child]) -> Command[Parent]:
        return elmstate.tag(command, Parent)


    def lift_badly(command: Command[Child], target: Callable[[Child], Parent]) -> Command[Parent]:
        return elmstate.tag(command, target)  # error: any


    class MyStore:
        def load(self, context: elmstate.Context | None, name: str) -> bytes | None:
            return None

        def store(self, context: elmstate.Context | None, name: str, value: bytes) -> None:
            pass


    class NotAStore:
        def load(self, context: elmstate.Context | None, name: str) -> str:
            return ""

        def store(self, context: elmstate.Context | None, name: str, value: bytes) -> None:
            pass


    good: Store = MyStore()
    bad: Store = NotAStore()  # error: assignment


    async def fetch_later(ctx: elmstate.Context) -> tuple[list[str], bool]:
        return ["abc"], False


    async def on_the_event_loop() -> None:
        abuf = aio.Buffer[str]()
        aconsumer = abuf.new_consumer()
        reveal_type(await aconsumer.get(None))  # reveal: str
        fed = await aio.batch(init, update, view, abuf, aconsumer, fetch_later)
        reveal_type(fed)  # reveal: int
        reveal_type(await aio.batch(init, update, view, buf, consumer, fetch))  # reveal: int
        saved = await aio.aggregate(
            init, update, view, abuf, aconsumer, fetch_later, elmstate.MemoryStore(),
            hydrate, dehydrate, "k",
        )
        reveal_type(saved)  # reveal: int
"""

_LINE = re.compile(r"^(?P<path>.+?):(?P<line>\d+): (?P<kind>error|note): (?P<text>.*)$")


@pytest.mark.slow
def test_mypy_follows_the_types(tmp_path: Path) -> None:
    api = pytest.importorskip("mypy.api", reason="mypy is not installed: pip install '.[test]'")
    source = textwrap.dedent(PROGRAM).lstrip()
    program = tmp_path / "program.py"
    program.write_text(source)
    config = tmp_path / "mypy.ini"
    config.write_text("[mypy]\n")  # this file's own settings, not the project's
    stdout, stderr, status = api.run(
        [
            str(program),
            "--config-file",
            str(config),
            "--strict",
            "--show-error-codes",
            "--no-error-summary",
            "--no-color-output",
            "--hide-error-context",
            "--cache-dir",
            str(tmp_path / "cache"),
        ]
    )
    assert "error" not in stderr.lower(), stderr
    reveals: dict[int, str] = {}
    errors: dict[int, list[str]] = {}
    for out in stdout.splitlines():
        match = _LINE.match(out)
        assert match is not None, f"unexpected mypy output: {out!r}\n{stdout}"
        line, text = int(match["line"]), match["text"]
        if match["kind"] == "note":
            revealed = re.fullmatch(r'Revealed type is "(.*)"', text)
            if revealed is not None:
                reveals[line] = revealed[1].replace("builtins.", "")
        else:
            code = re.search(r"\[([a-z-]+)\]$", text)
            errors.setdefault(line, []).append(code[1] if code else text)

    expected_reveals: dict[int, str] = {}
    expected_errors: dict[int, str] = {}
    for number, text in enumerate(source.splitlines(), 1):
        if "# reveal: " in text:
            expected_reveals[number] = text.split("# reveal: ", 1)[1]
        elif "# error: " in text:
            expected_errors[number] = text.split("# error: ", 1)[1]

    for line, want in expected_reveals.items():
        got = reveals.get(line)
        assert got is not None and (got == want or got.endswith("." + want)), (
            f"line {line}: mypy revealed {got!r}, expected {want!r}\n{stdout}"
        )
    for line, code in expected_errors.items():
        found = errors.get(line, [])
        assert found and (code == "any" or code in found), f"line {line}: no [{code}]\n{stdout}"
    unexpected = {line: codes for line, codes in errors.items() if line not in expected_errors}
    assert not unexpected, f"unexpected mypy errors {unexpected}\n{stdout}"
    assert status == 1  # the expected errors


def _takes_a_hydrator(hydrator: et.Hydrator[int]) -> None:
    """A user's function, in a module that never imports Context."""


@pytest.mark.skipif(sys.version_info < (3, 10), reason="X | None annotations evaluate from 3.10")
def test_type_hints_resolve_at_run_time(elm: ModuleType) -> None:
    """typing.get_type_hints, as runtime checkers and doc tools call it, finds Context."""
    assert typing.get_type_hints(elm.aggregate)["ctx"] == Optional[elm.Context]
    assert typing.get_type_hints(elm.typing.Store.load)["ctx"] == Optional[elm.Context]
    hydrator = typing.get_type_hints(_takes_a_hydrator)["hydrator"]
    ctx = typing.get_args(hydrator)[0][0]
    assert isinstance(ctx, type) and ctx.__name__ == "Context", ctx

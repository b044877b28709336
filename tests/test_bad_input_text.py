"""Text (str, bytes, bytearray, memoryview) is refused where an iterable is expected."""

from __future__ import annotations

import re
from types import ModuleType
from typing import Any, Callable

import pytest
from _helpers import SAFETY, aggregate_once
from _recording import FakeQueue, Recorder, Stop


def not_a_command(kind: str) -> str:
    return re.escape(f"a command must be None or an iterable of callables, got {kind}")


# --------------------------------------------------------------------------- commands


def run_fake(elm: ModuleType, init: Callable[[], Any], update: Callable[[Any], Any]) -> None:
    """Run over a FakeQueue scripted with [1, 2]: its third get raises Stop."""
    rec = Recorder()
    queue = FakeQueue(rec, [1, 2])
    elm.run(
        init,
        update,
        lambda model: rec.record("view", model),
        queue,
        queue,
        ctx=elm.Context(timeout=SAFETY),
    )


def run_batch(elm: ModuleType, init: Callable[[], Any], update: Callable[[Any], Any]) -> Any:
    """A batch over a Buffer with one page, [1, 2]; returns its model."""
    buf = elm.Buffer()
    return elm.batch(
        init,
        update,
        lambda model: None,
        buf,
        buf.new_consumer(),
        lambda ctx: ([1, 2], False),
        ctx=elm.Context(timeout=SAFETY),
    )


def adding(command: Any) -> Callable[[Any], Any]:
    """An update whose transform adds the message and returns ``command``."""
    return lambda message: lambda model: (model + message, command)


@pytest.mark.parametrize("command, kind", [("", "str"), (b"", "bytes")], ids=["''", "b''"])
@pytest.mark.parametrize("entry", ["run", "batch"])
@pytest.mark.parametrize("where", ["init", "transform"])
def test_an_empty_text_command_is_refused(
    elm: ModuleType, command: Any, kind: str, entry: str, where: str
) -> None:
    """Issue 7, minor: "" and b"" as a command raise TypeError (they were empty commands)."""
    loop = run_fake if entry == "run" else run_batch
    if where == "init":
        init, update = (lambda: (0, command)), adding(None)
    else:
        init, update = (lambda: (0, None)), adding(command)
    with pytest.raises(TypeError, match=not_a_command(kind)):
        loop(elm, init, update)


@pytest.mark.parametrize("command", [(), []], ids=["()", "[]"])
def test_an_empty_tuple_or_list_is_a_valid_empty_command(elm: ModuleType, command: Any) -> None:
    """Issue 7, minor: () and [] stay valid empty commands, in run and batch."""
    assert run_batch(elm, lambda: (0, command), adding(command)) == 3
    rec = Recorder()
    queue = FakeQueue(rec, [1, 2])
    with pytest.raises(Stop):
        elm.run(
            lambda: (0, command),
            adding(command),
            lambda model: rec.record("view", model),
            queue,
            queue,
            ctx=elm.Context(timeout=SAFETY),
        )
    assert [call for call in rec.calls if call[0] in ("view", "put")] == [
        ("view", 0),
        ("put", ()),
        ("view", 1),
        ("put", ()),
        ("view", 3),
        ("put", ()),
    ]


# --------------------------------------------------------------------------- fetcher pages


class Forwarder:
    """A producer that is not a Buffer: it forwards puts (the loops' generic path)."""

    def __init__(self, buf: Any) -> None:
        self.buf = buf

    def put(self, ctx: Any, *values: Any) -> None:
        self.buf.put(ctx, *values)


@pytest.mark.parametrize(
    "page",
    [bytearray(b"ab"), memoryview(b"ab"), b"ab", "ab"],
    ids=["bytearray", "memoryview", "bytes", "str"],
)
@pytest.mark.parametrize("more", [False, True])
@pytest.mark.parametrize("producer", ["Buffer", "other"])
def test_a_text_page_is_refused_naming_the_fetcher(
    elm: ModuleType, page: Any, more: bool, producer: str
) -> None:
    """Issue 7, minor: a fetcher page of bytearray or memoryview is refused like bytes and str."""
    buf = elm.Buffer()
    updates: list[Any] = []
    replies = [(page, more), ([], False)]  # should the page pass, the input still ends

    def update(message: Any) -> None:
        updates.append(message)

    with pytest.raises(TypeError, match="fetcher"):
        elm.batch(
            lambda: (0, None),
            update,
            lambda model: None,
            buf if producer == "Buffer" else Forwarder(buf),
            buf.new_consumer(),
            lambda ctx: replies.pop(0),
            ctx=elm.Context(timeout=SAFETY),
        )
    assert updates == []  # not one byte became a message


# --------------------------------------------------------------------------- read-only models


@pytest.mark.parametrize(
    "references, kind",
    [("ab", "str"), (b"ab", "bytes"), (bytearray(b"ab"), "bytearray")],
    ids=["str", "bytes", "bytearray"],
)
def test_text_read_only_models_are_refused(elm: ModuleType, references: Any, kind: str) -> None:
    """Issue 7, minor: read_only_models="ab" is refused as a whole, not entry by entry."""
    store = elm.MemoryStore()
    store.store(None, "k", b"model")
    with pytest.raises(TypeError) as raised:
        aggregate_once(elm, store, lambda ctx, key, value: ("model", references), "k")
    message = str(raised.value)
    assert "read_only_models" in message and kind in message, message
    assert "must be None or an iterable" in message, message
    assert "entries" not in message, message

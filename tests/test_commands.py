"""new_command and tag (docs/contract.md#command-helpers)."""

from __future__ import annotations

import pytest
from _recording import vid


def test_new_command_one_callable_per_message(elm):
    marker = object()
    command = elm.new_command(1, None, "x", marker)
    assert type(command) is list
    assert len(command) == 4
    assert all(callable(entry) for entry in command)
    assert [entry() for entry in command] == [1, None, "x", marker]
    assert command[3]() is marker
    assert [entry() for entry in command] == [1, None, "x", marker]  # callable again


def test_new_command_empty(elm):
    assert elm.new_command() == []


def test_new_command_entries_are_independent(elm):
    a, b = elm.new_command("a"), elm.new_command("b")
    assert a[0]() == "a" and b[0]() == "b"
    assert a is not b


def test_tag_lifts_each_entry(elm):
    calls: list = []

    def target(message):
        calls.append(message)
        return ("parent", message)

    command = elm.new_command(1, 2)
    lifted = elm.tag(command, target)
    assert type(lifted) is list and len(lifted) == 2
    assert calls == []  # lazy: nothing runs until an entry is called
    assert lifted[1]() == ("parent", 2)
    assert lifted[0]() == ("parent", 1)
    assert calls == [2, 1]


def test_tag_calls_target_when_entry_returns_none(elm):
    calls: list = []

    def target(message):
        calls.append(message)
        return "wrapped"

    lifted = elm.tag([lambda: None], target)
    assert lifted[0]() == "wrapped"
    assert calls == [None]


def test_tag_keeps_none_entries(elm):
    command = [None, lambda: 1, None]
    lifted = elm.tag(command, lambda m: m * 10)
    assert lifted[0] is None and lifted[2] is None
    assert lifted[1]() == 10


def test_tag_does_not_modify_input(elm):
    first, second = (lambda: 1), (lambda: 2)
    command = [first, None, second]
    lifted = elm.tag(command, str)
    assert lifted is not command
    assert command == [first, None, second]
    assert command[0] is first and command[2] is second
    assert [None if e is None else e() for e in lifted] == ["1", None, "2"]


def test_tag_accepts_any_iterable(elm):
    lifted = elm.tag((f for f in elm.new_command("a", "b")), str.upper)
    assert type(lifted) is list
    assert [entry() for entry in lifted] == ["A", "B"]
    assert elm.tag((), str) == []


def test_tag_of_empty_is_a_new_empty_list(elm):
    empty: list = []
    lifted = elm.tag(empty, str)
    assert lifted == [] and lifted is not empty


def test_tag_nests(elm):
    lifted = elm.tag(elm.tag(elm.new_command(1), lambda m: ("inner", m)), lambda m: ("outer", m))
    assert lifted[0]() == ("outer", ("inner", 1))


def test_tag_entry_error_propagates(elm):
    boom = ValueError("child failed")

    def entry():
        raise boom

    lifted = elm.tag([entry], str)
    with pytest.raises(ValueError) as info:
        lifted[0]()
    assert info.value is boom


@pytest.mark.parametrize("command", [None, [lambda: 1], []])
def test_tag_none_target_returns_none(elm, command):
    assert elm.tag(command, None) is None


def test_tag_none_command_returns_none(elm):
    called: list = []
    assert elm.tag(None, called.append) is None
    assert called == []


@pytest.mark.parametrize("target", [1, "str", b"x", [str], object()], ids=vid)
def test_tag_non_callable_target(elm, target):
    with pytest.raises(TypeError, match="target"):
        elm.tag([lambda: 1], target)


def test_tag_in_a_program(elm):
    """Child commands lifted with tag come back as parent messages through the Buffer."""
    buf = elm.Buffer()
    seen: list = []

    def update(message):
        seen.append(message)
        if message == "start":
            child = elm.new_command("c1", None, "c2")
            return lambda model: (model, elm.tag(child, lambda m: ("child", m)))
        return lambda model: (model + [message], None)

    def fetcher(ctx):
        return ["start"], False

    result = elm.batch(
        lambda: ([], None),
        update,
        lambda m: None,
        buf,
        buf.new_consumer(),
        fetcher,
        ctx=elm.Context(timeout=5),
    )
    assert seen == ["start", ("child", "c1"), ("child", None), ("child", "c2")]
    assert result == [("child", "c1"), ("child", None), ("child", "c2")]

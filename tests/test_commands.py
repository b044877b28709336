"""new_command, tag, attempt and pages (docs/contract.md#command-helpers)."""

from __future__ import annotations

import sys

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


# --------------------------------------------------------------------------- attempt


def test_attempt_returns_the_entry_message(elm):
    entry = elm.attempt(lambda: "ok", lambda exc: ("failed", exc))
    assert callable(entry)
    assert entry() == "ok"
    assert entry() == "ok"  # callable again


def test_attempt_turns_an_exception_into_on_error(elm):
    failure = ConnectionError("down")
    seen: list = []

    def entry():
        raise failure

    def on_error(exc):
        seen.append(exc)
        return ("failed", exc)

    assert elm.attempt(entry, on_error)() == ("failed", failure)
    assert seen[0] is failure


@pytest.mark.parametrize("error", [KeyboardInterrupt, SystemExit, GeneratorExit])
def test_attempt_lets_base_exceptions_through(elm, error):
    seen: list = []

    def entry():
        raise error

    with pytest.raises(error):
        elm.attempt(entry, seen.append)()
    assert seen == []


def test_attempt_on_error_raising_propagates(elm):
    second = RuntimeError("on_error failed")

    def entry():
        raise ValueError("first")

    def on_error(exc):
        raise second

    with pytest.raises(RuntimeError) as caught:
        elm.attempt(entry, on_error)()
    assert caught.value is second


def test_attempt_in_a_batch_the_tick_succeeds(elm):
    # A failing side effect becomes a message that update handles.
    def effect():
        raise OSError("disk full")

    def update(message):
        if message == "save":
            return lambda model: (model, [elm.attempt(effect, lambda exc: ("error", str(exc)))])
        return lambda model: ((*model, message), None)

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        model = elm.batch(
            lambda: ((), None),
            update,
            lambda model: None,
            buf,
            consumer,
            lambda ctx: (["save"], False),
        )
    assert model == (("error", "disk full"),)


@pytest.mark.parametrize(
    ("entry", "on_error", "named"), [(5, print, "entry"), (print, None, "on_error")]
)
def test_attempt_bad_arguments(elm, entry, on_error, named):
    with pytest.raises(TypeError, match=named):
        elm.attempt(entry, on_error)


# --------------------------------------------------------------------------- pages


def test_pages_exact(elm):
    fetch = elm.pages(range(5), 2)
    assert fetch(None) == ([0, 1], True)
    assert fetch(None) == ([2, 3], True)
    assert fetch(None) == ([4], False)
    assert fetch(None) == ([], False)  # after the last page: the end again
    assert fetch(None) == ([], False)


def test_pages_a_multiple_of_size_ends_on_a_full_page(elm):
    fetch = elm.pages([1, 2, 3, 4], 2)
    assert fetch(None) == ([1, 2], True)
    assert fetch(None) == ([3, 4], False)  # read ahead: no empty page after it


@pytest.mark.parametrize("size", [1, 3, 100])
def test_pages_sizes(elm, size):
    fetch = elm.pages(range(7), size)
    got, more = [], True
    while more:
        page, more = fetch(None)
        assert 0 < len(page) <= size
        got.extend(page)
    assert got == list(range(7))


@pytest.mark.parametrize("empty", [[], (), iter([]), (x for x in ())])
def test_pages_empty_gives_one_empty_last_page(elm, empty):
    fetch = elm.pages(empty, 3)
    assert fetch(None) == ([], False)
    assert fetch(None) == ([], False)


def test_pages_reads_a_generator_lazily(elm):
    pulled: list = []

    def numbers():
        for n in range(10):
            pulled.append(n)
            yield n

    fetch = elm.pages(numbers(), 3)
    assert pulled == []  # nothing read before the first call
    assert fetch(None) == ([0, 1, 2], True)
    assert pulled == [0, 1, 2, 3]  # one read ahead
    assert fetch(None) == ([3, 4, 5], True)
    assert pulled == list(range(7))


def test_pages_returns_new_lists(elm):
    fetch = elm.pages(range(4), 2)
    first, _ = fetch(None)
    first.append("mine")
    assert fetch(None) == ([2, 3], False)


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_pages_as_a_batch_fetcher(elm, feed):
    seen: list = []

    def update(message):
        return lambda model: (model + message, None)

    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        total = elm.batch(
            lambda: (0, None),
            update,
            seen.append,
            buf,
            consumer,
            elm.pages((n for n in range(1, 11)), 3),
            feed=feed,
        )
    assert total == 55
    assert seen == [0, 1, 3, 6, 10, 15, 21, 28, 36, 45, 55]


@pytest.mark.parametrize("feed", ["thread", "inline"])
def test_pages_empty_as_a_batch_fetcher(elm, feed):
    with elm.Buffer() as buf, buf.new_consumer() as consumer:
        model = elm.batch(
            lambda: ("init", None),
            lambda message: None,
            lambda model: None,
            buf,
            consumer,
            elm.pages([], 5),
            feed=feed,
        )
    assert model == "init"


def test_pages_an_error_from_the_iterable_propagates(elm):
    def broken():
        yield 1
        raise LookupError("source failed")

    fetch = elm.pages(broken(), 5)
    with pytest.raises(LookupError):
        fetch(None)


@pytest.mark.parametrize(
    ("iterable", "size", "error", "named"),
    [
        ([1], 0, ValueError, "size"),
        ([1], -2, ValueError, "size"),
        ([1], True, TypeError, "size"),
        ([1], 2.0, TypeError, "size"),
        ([1], "2", TypeError, "size"),
        ([1], None, TypeError, "size"),
        (5, 2, TypeError, "iterable"),
        (None, 2, TypeError, "iterable"),
        ("abc", 2, TypeError, "iterable"),
        (b"abc", 2, TypeError, "iterable"),
    ],
)
def test_pages_bad_arguments(elm, iterable, size, error, named):
    with pytest.raises(error, match=named):
        elm.pages(iterable, size)


def test_pages_refuses_a_size_past_sys_maxsize(elm):
    with pytest.raises(ValueError, match="size"):
        elm.pages([1, 2], sys.maxsize + 1)
    assert elm.pages([1, 2], sys.maxsize)(None) == ([1, 2], False)

"""The benchmark workload, shared by ``compare.py`` and ``test_bench.py``.

N int messages; ``update`` picks a transform that adds 1 to the model; ``view``
stores the model; no commands. ``run`` never returns, so the last message is 0,
whose transform raises :class:`Stop`; the floor pays the same test.

Two spellings of "no commands": ``update`` / ``increment`` return ``None`` as the
command, ``update_empty`` / ``increment_empty`` return ``()`` (an empty
iterable: the loop must look inside it). The floor is the same for both: a
hand-written loop has no command to dispatch either way.

For ``aggregate``: a ~1 KB model (a count and a payload) pickled to and from
the store, and an update that adds 1 to the count.
"""

from __future__ import annotations

import pickle
from typing import Any, Callable

MODEL_BYTES = 1024  # aggregate: the pickled model's size, roughly


class Stop(Exception):
    """Raised by the last message's transform: ends the loops that never return."""


last: list[Any] = [None]  # what view saw last


def increment(model: int) -> tuple[int, None]:
    return model + 1, None


def stop(model: int) -> tuple[int, None]:
    raise Stop


def update(message: int) -> Callable[[int], tuple[int, None]]:
    return increment if message else stop


def increment_empty(model: int) -> tuple[int, tuple[()]]:
    return model + 1, ()


def update_empty(message: int) -> Callable[[int], tuple[int, tuple[()] | None]]:
    """``update`` whose transforms return ``()``, not ``None``, as the command."""
    return increment_empty if message else stop


def view(model: Any) -> None:
    last[0] = model


def init() -> tuple[int, None]:
    return 0, None


def messages(count: int) -> list[int]:
    """``count`` counted messages, 1 .. count, then the 0 that stops the loop."""
    return [*range(1, count + 1), 0]


def floor(msgs: list[int]) -> Any:
    """The ticks written by hand: the cost below which no loop can go. Returns the last model."""
    model, _ = init()
    view(model)
    try:
        for m in msgs:
            t = update(m)
            model, cmd = t(model)
            view(model)
    except Stop:
        pass
    return last[0]


def aggregate_init() -> tuple[dict[str, Any], None]:
    return {"count": 0, "payload": b"x" * (MODEL_BYTES - 60)}, None


def add(model: dict[str, Any]) -> tuple[dict[str, Any], None]:
    return {"count": model["count"] + 1, "payload": model["payload"]}, None


def aggregate_update(message: int) -> Callable[[dict[str, Any]], tuple[dict[str, Any], None]]:
    return add


def hydrator(ctx: Any, key: str, value: bytes) -> tuple[Any, None]:
    return pickle.loads(value), None


def dehydrator(ctx: Any, key: str, model: Any) -> bytes:
    return pickle.dumps(model)


def bounded_supported() -> bool:
    """Whether the installed elmstate has ``Buffer(maxsize)``: an older one is measured without."""
    import elmstate

    try:
        elmstate.Buffer(2)  # type: ignore[call-arg,unused-ignore]
    except TypeError:
        return False
    return True


def new_buffer(maxsize: int | None) -> Any:
    """``Buffer()`` unbounded, as an older core (whose Buffer takes no argument) spells it."""
    import elmstate

    if maxsize is None:
        return elmstate.Buffer()
    return elmstate.Buffer(maxsize)  # type: ignore[call-arg,unused-ignore]

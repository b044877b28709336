"""Types to write elmstate programs against, and the protocols of its parts.

Annotate a program with these and a type checker follows the model and message
types through ``run``, ``batch`` and ``aggregate``::

    from elmstate import Buffer, Context, batch
    from elmstate.typing import Command, Transform

    def init() -> tuple[int, Command[str]]:
        return 0, None

    def update(msg: str) -> Transform[int, str] | None:
        return lambda model: (model + len(msg), None)

    def fetch(ctx: Context) -> tuple[list[str], bool]:
        return ["a", "bb"], False

    buf: Buffer[str] = Buffer()
    model = batch(init, update, print, buf, buf.new_consumer(), fetch)  # model: int

Your own producer, consumer, fetcher or store needs no base class: it only has
to have the methods of :class:`Producer`, :class:`Consumer`, :class:`Fetcher`
or :class:`Store` (structural typing, PEP 544). Their parameters are
positional-only here because elmstate passes them positionally: your methods may
name them as they like. Methods whose result elmstate ignores return ``object``,
so an implementation may return anything (say, the ids a broker assigned).
Their ``ctx`` is ``Context | None``, as for elmstate's own Buffer and stores
(``store.load(None, key)`` works there): every ``ctx`` may be ``None``.
The callbacks (``Fetcher``, ``Hydrator``, ``Dehydrator``) are only called by
elmstate, which always passes a ``Context``, so they may require one.

``Producer``, ``Consumer`` and ``Store`` are ``runtime_checkable``:
``isinstance(store, Store)`` tells whether the methods exist, which is all
elmstate itself asks of an argument (docs/contract.md#errors). It does not check
their signatures, and it is slow next to a plain attribute test, so keep it out
of hot paths. ``Fetcher`` is not: as a callback protocol it would be true of
every callable.

The aliases are subscriptable at run time on every supported Python (3.9 on),
so ``Command[int]`` also works outside annotations: they are spelled with
``Optional`` (``X | None`` needs 3.10 outside annotations) and ``typing.Callable``
(``collections.abc.Callable`` mis-substitutes its parameters before 3.9.2).
"""

from __future__ import annotations

from collections.abc import Awaitable, Iterable, Sequence
from typing import (
    TYPE_CHECKING,
    Any,
    Callable,
    ForwardRef,
    Optional,
    Protocol,
    TypeVar,
    runtime_checkable,
)

if TYPE_CHECKING:
    # PEP 696 (3.13's typing); type checkers read it from typing_extensions' stub.
    from typing_extensions import TypeVar as DefaultedTypeVar

    from ._core_py import Context
else:
    # This module loads before the core it describes, so Context is a reference
    # here until elmstate/__init__.py sets the live core's class in its place:
    # then typing.get_type_hints resolves it, also in a user's Hydrator[int].
    try:
        Context = ForwardRef("Context", module=__name__)
    except TypeError:  # Python 3.9.0-3.9.6: no module argument
        Context = ForwardRef("Context")

__all__ = [
    "AsyncConsumer",
    "AsyncFetcher",
    "AsyncStore",
    "Cleaner",
    "Command",
    "Consumer",
    "DeadLetter",
    "Dehydrator",
    "Fetcher",
    "Hydrator",
    "Init",
    "Model",
    "Msg",
    "Producer",
    "ReadOnlyModels",
    "Replay",
    "Store",
    "T",
    "Transform",
    "Update",
    "VersionedManyStore",
    "VersionedStore",
    "View",
]

Model = TypeVar("Model")
"""A program's model type."""
Msg = TypeVar("Msg")
"""A program's message type."""
# T: what a Buffer holds. It defaults to Any (PEP 696), so a plain Buffer() is a
# Buffer[Any], as before Buffer was generic, and strict code that never names a
# type still checks; write Buffer[int]() (or annotate) to have puts checked.
if TYPE_CHECKING:
    T = DefaultedTypeVar("T", default=Any)
else:
    T = TypeVar("T")

_T_co = TypeVar("_T_co", covariant=True)
_T_contra = TypeVar("_T_contra", contravariant=True)

Command = Optional[Iterable[Optional[Callable[[], Optional[Msg]]]]]
"""``Command[Msg]``: ``None``, or an iterable of zero-argument callables (or ``None``
entries), each returning a message or ``None``."""

Transform = Callable[[Model], tuple[Model, Command[Msg]]]
"""``Transform[Model, Msg]``: phase 2 of an update, ``model -> (model, command)``."""

Init = Callable[[], tuple[Model, Command[Msg]]]
"""``Init[Model, Msg]``: ``() -> (model, command)``, the initial model and commands."""

View = Callable[[Model], object]
"""``View[Model]``: called with the model after every tick; its result is ignored."""

Replay = Callable[[], bool]
"""While it returns true, commands are skipped."""

Cleaner = Callable[[int, Sequence[int]], int]
"""``cleaner(size, offsets) -> n``: how many of a Buffer's oldest messages to drop."""

ReadOnlyModels = Optional[
    Iterable[Optional[Callable[[], tuple[str, Optional[Callable[[Any], object]]]]]]
]
"""What a hydrator returns beside the model: ``None``, or callables returning
``(other_key, load)``; ``load`` receives the model stored at ``other_key`` (or
``None``). Their models may be of any type, hence ``Any``."""

Hydrator = Callable[[Context, str, bytes], tuple[Model, ReadOnlyModels]]
"""``Hydrator[Model]``: ``(ctx, key, value) -> (model, read_only_models)``."""

Dehydrator = Callable[[Context, str, Model], bytes]
"""``Dehydrator[Model]``: ``(ctx, key, model) -> bytes``, the reverse of the hydrator."""

DeadLetter = Callable[[Msg, Exception], object]
"""``DeadLetter[Msg]``: ``(message, exc) -> None``, given a message that failed
``supervise``'s ``max_failures`` attempts and the last attempt's exception."""


class Update(Protocol[Model, Msg]):
    """``Update[Model, Msg]``: phase 1 of an update, ``message -> transform or None``.

    A protocol rather than a ``Callable`` alias so that its parameters read in the
    same order as :data:`Transform`'s (an alias orders them by first appearance).
    Any function of that shape matches it: ``def update(msg: Msg) ->
    Transform[Model, Msg] | None``.
    """

    def __call__(self, message: Msg, /) -> Transform[Model, Msg] | None: ...


@runtime_checkable
class Producer(Protocol[_T_contra]):
    """Where produced messages go: ``put(ctx, *values)``; must not deadlock the loop."""

    def put(self, ctx: Context | None, /, *values: _T_contra) -> object: ...


@runtime_checkable
class Consumer(Protocol[_T_co]):
    """Where messages come from: ``get(ctx)`` blocks until one is there or ``ctx`` ends."""

    def get(self, ctx: Context | None, /) -> _T_co: ...
    def commit(self) -> object: ...
    def rollback(self) -> object: ...


class Fetcher(Protocol[_T_co]):
    """Batch input: ``fetcher(ctx) -> (messages, more)``."""

    def __call__(self, ctx: Context, /) -> tuple[Sequence[_T_co], bool]: ...


@runtime_checkable
class Store(Protocol):
    """A key-value store of snapshots; ``None`` from ``load`` means the key is absent."""

    def load(self, ctx: Context | None, key: str, /) -> bytes | None: ...
    def store(self, ctx: Context | None, key: str, value: bytes, /) -> object: ...


@runtime_checkable
class VersionedStore(Store, Protocol):
    """A :class:`Store` with optimistic concurrency (docs/contract.md#versioned-stores).

    An absent key has version 0. ``store_versioned`` writes only if the key's
    version still equals ``version``, returns the new one (``version + 1``), and
    otherwise raises :class:`elmstate.Conflict` and stores nothing. A plain
    ``store`` bumps the version too. :func:`elmstate.aggregate` saves a store
    that has both methods by compare-and-set.
    """

    def load_versioned(self, ctx: Context | None, key: str, /) -> tuple[bytes | None, int]: ...
    def store_versioned(
        self, ctx: Context | None, key: str, value: bytes, version: int, /
    ) -> int: ...


@runtime_checkable
class VersionedManyStore(VersionedStore, Protocol):
    """A :class:`VersionedStore` that also reads and saves many keys at once
    (docs/stores.md#saving-many-keys).

    ``load_many_versioned`` returns ``(value or None, version)`` for each key, in
    the order given. ``store_many_versioned`` takes ``(key, value, version)``
    items and is all or nothing: if every key is still at its ``version`` it
    writes them all and returns the new versions (``version + 1`` each), in
    order; otherwise it raises :class:`elmstate.Conflict` for the first item
    whose version differs and stores nothing. A key may appear once per call.
    Every bundled store has both methods.
    """

    def load_many_versioned(
        self, ctx: Context | None, keys: Sequence[str], /
    ) -> list[tuple[bytes | None, int]]: ...
    def store_many_versioned(
        self, ctx: Context | None, items: Sequence[tuple[str, bytes, int]], /
    ) -> list[int]: ...


# elmstate.aio (docs/asyncio.md): protocol methods may also return awaitables.
# A producer's put already returns ``object``, so an async one is a Producer.


@runtime_checkable
class AsyncConsumer(Protocol[_T_co]):
    """A consumer whose ``get`` is awaited (elmstate.aio); ``commit`` and
    ``rollback`` may be plain or async."""

    def get(self, ctx: Context | None, /) -> Awaitable[_T_co]: ...
    def commit(self) -> object: ...
    def rollback(self) -> object: ...


class AsyncFetcher(Protocol[_T_co]):
    """An awaited fetcher (elmstate.aio): ``await fetcher(ctx) -> (messages, more)``."""

    def __call__(self, ctx: Context, /) -> Awaitable[tuple[Sequence[_T_co], bool]]: ...


@runtime_checkable
class AsyncStore(Protocol):
    """A store whose methods are awaited (elmstate.aio); a versioned one also has
    ``load_versioned`` and ``store_versioned``, awaited too."""

    def load(self, ctx: Context | None, key: str, /) -> Awaitable[bytes | None]: ...
    def store(self, ctx: Context | None, key: str, value: bytes, /) -> Awaitable[object]: ...

"""``aggregate``: a batch whose model is loaded from, and saved to, a key-value store."""

from __future__ import annotations

from collections.abc import Generator, Iterator
from typing import TYPE_CHECKING, Any, Callable, cast

from . import _validate as check
from ._backend import core
from .typing import (
    Command,
    Consumer,
    Dehydrator,
    Fetcher,
    Hydrator,
    Init,
    Model,
    Msg,
    Producer,
    Replay,
    Store,
    Update,
    VersionedStore,
    View,
)

if TYPE_CHECKING:
    from ._core_py import Context
else:
    Context = core.Context  # for typing.get_type_hints at run time

Load = Callable[[Any], object]


def aggregate(
    init: Init[Model, Msg],
    update: Update[Model, Msg],
    view: View[Model],
    producer: Producer[Msg],
    consumer: Consumer[Msg],
    fetcher: Fetcher[Msg],
    store: Store,
    hydrator: Hydrator[Model],
    dehydrator: Dehydrator[Model],
    key: str,
    *,
    ctx: Context | None = None,
    replay: Replay | None = None,
    feed: str = "thread",
) -> Model:
    """Load the model at ``key``, run a batch on it, and store the result on success.

    Returns the stored model. On any failure nothing is stored and the error
    propagates unchanged. A versioned store is saved by compare-and-set: if
    another writer saved ``key`` since it was loaded, :class:`~elmstate.Conflict`
    is raised and nothing is stored.
    """
    _checks(
        init,
        update,
        view,
        producer,
        consumer,
        fetcher,
        store,
        hydrator,
        dehydrator,
        key,
        replay,
        feed,
    )
    ctx = core._context_arg(ctx)

    versioned = _versioned(store)
    version = 0
    if versioned is None:
        value = store.load(ctx, key)
    else:
        reply = versioned.load_versioned(ctx, key)
        if type(reply) is tuple and len(reply) == 2:
            value, version = reply
        else:
            value, version = check.pair("store.load_versioned", reply, "(value, version)")
    if value is not None:
        root, references = _hydrate(ctx, hydrator, key, value)
        if references is not None:
            steps = _Loader(ctx, hydrator).follow(key, root, references)
            try:
                other = next(steps)
                while True:
                    other = steps.send(store.load(ctx, other))
            except StopIteration:
                pass
        if root is not None:

            def init() -> tuple[Model, Command[Msg]]:
                return root, None

    # batch past its checks, made above
    model: Model = core._batch(init, update, view, producer, consumer, fetcher, ctx, replay, feed)
    value = _dehydrate(dehydrator, ctx, key, model)
    if versioned is None:
        store.store(ctx, key, value)
    else:
        versioned.store_versioned(ctx, key, value, version)
    return model


def _checks(
    init: Any,
    update: Any,
    view: Any,
    producer: Any,
    consumer: Any,
    fetcher: Any,
    store: Any,
    hydrator: Any,
    dehydrator: Any,
    key: Any,
    replay: Any,
    feed: Any,
) -> None:
    """aggregate's argument checks (and elmstate.aio's)."""
    # Every check in one expression for the common case: a call per argument
    # would cost a frame each, a third of aggregate's own work. Only when one
    # fails do the checks that name the argument run.
    if not (
        callable(init)
        and callable(update)
        and callable(view)
        and id(type(producer)) in check.PRODUCERS
        and id(type(consumer)) in check.CONSUMERS
        and callable(fetcher)
        and id(type(store)) in check.STORES
        and callable(hydrator)
        and callable(dehydrator)
        and type(key) is str
        and (replay is None or callable(replay))
        and type(feed) is str
        and (feed == "inline" or feed == "thread")
    ):
        # one by one: the first that fails raises, naming its argument
        check.program_args(init, update, view, producer, consumer)
        check.callable_arg("fetcher", fetcher)
        check.store_arg(store)
        check.callable_arg("hydrator", hydrator)
        check.callable_arg("dehydrator", dehydrator)
        check.key_arg("key", key)
        check.optional_callable_arg("replay", replay)
        check.feed_arg(feed)


def _versioned(store: Store) -> VersionedStore | None:
    """The store, if it speaks the versioned protocol (docs/contract.md#aggregate)."""
    if id(type(store)) in check.STORES:  # the bundled stores: every one is versioned
        return cast(VersionedStore, store)
    if callable(getattr(store, "load_versioned", None)) and callable(
        getattr(store, "store_versioned", None)
    ):
        return cast(VersionedStore, store)
    return None


def _hydrate(
    ctx: Context, hydrator: Hydrator[Any], key: str, value: Any
) -> tuple[Any, Iterator[Any] | None]:
    """A loaded value's model, and an iterator over its references (or None)."""
    if type(value) is not bytes:
        value = check.bytes_value(value, "store.load must return bytes or None")
    reply = hydrator(ctx, key, value)
    if type(reply) is tuple and len(reply) == 2:
        model, references = reply
    else:
        if check.awaitable(reply):
            raise check.refused_awaitable("hydrator", reply)
        model, references = check.pair("hydrator", reply, "(model, read_only_models)")
    if references is None:
        return model, None
    return model, _iterable("read_only_models", references)


def _dehydrate(dehydrator: Dehydrator[Any], ctx: Context, key: str, model: Any) -> bytes:
    """The bytes to store for ``model``."""
    value = dehydrator(ctx, key, model)
    if type(value) is not bytes:
        if check.awaitable(value):
            raise check.refused_awaitable("dehydrator", value)
        value = check.bytes_value(value, "dehydrator must return bytes")
    return value


class _Loader:
    """Follows the read-only models a root model asks for, transitively, loading
    each key once. They are loaded with plain ``load``: only the root is saved.

    ``follow`` is a generator that yields each key to load and is sent back its
    value (bytes or None), so that a synchronous and an asynchronous store
    (elmstate.aio) share it.
    """

    def __init__(self, ctx: Context, hydrator: Hydrator[Any]) -> None:
        self.ctx = ctx
        self.hydrator = hydrator
        self.loaded: dict[str, Any] = {}

    def follow(self, key: str, root: Any, references: Iterator[Any]) -> Generator[str, Any, None]:
        """Depth first, as recursion would, but on a stack of our own: chains of
        references may run thousands of keys deep."""
        self.loaded[key] = root  # a cycle back to the root terminates
        # Each frame: the references still to follow, and the load that receives
        # the frame's model once they all were (None for the root).
        stack: list[tuple[Iterator[Any], Load | None, Any]] = [(references, None, root)]
        while stack:
            references, receive, model = stack[-1]
            reference: Any = next(references, _DONE)
            if reference is _DONE:
                stack.pop()
                if receive is not None:
                    _receive(receive, model)
                continue
            if reference is None:
                continue
            check.callable_arg("read_only_models entries", reference)
            pair = reference()
            if not (type(pair) is tuple and len(pair) == 2) and check.awaitable(pair):
                raise check.refused_awaitable("a read_only_models entry", pair)
            other_key, receive = check.pair("a read_only_models entry", pair, "(key, load)")
            if receive is None:
                continue
            check.key_arg("a read_only_models key", other_key)
            check.callable_arg("a read_only_models load", receive)
            if other_key in self.loaded:
                _receive(receive, self.loaded[other_key])
                continue
            value = yield other_key
            model, more = self._hydrated(other_key, value)
            if more is None:
                _receive(receive, model)
            else:
                stack.append((more, receive, model))

    def _hydrated(self, key: str, value: Any) -> tuple[Any, Iterator[Any] | None]:
        """A read-only key's model, from its loaded value."""
        if value is None:
            self.loaded[key] = None
            return None, None
        model, references = _hydrate(self.ctx, self.hydrator, key, value)
        self.loaded[key] = model  # before the references: a cycle back here terminates
        return model, references


def _receive(receive: Load, model: Any) -> None:
    result = receive(model)
    if result is not None and check.awaitable(result):
        raise check.refused_awaitable("a read_only_models load", result)


_DONE = object()  # the end of a frame's references


def _iterable(name: str, value: Any) -> Iterator[Any]:
    if isinstance(value, check.TEXT):
        raise TypeError(f"{name} must be None or an iterable, got {type(value).__name__}")
    try:
        return iter(value)
    except TypeError:
        raise TypeError(f"{name} must be None or an iterable, got {type(value).__name__}") from None

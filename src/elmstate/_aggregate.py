"""``aggregate``: a batch whose model is loaded from, and saved to, a key-value store."""

from __future__ import annotations

from collections.abc import Iterator
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
    check.callable_arg("init", init)
    check.callable_arg("update", update)
    check.callable_arg("view", view)
    check.producer_arg(producer)
    check.consumer_arg(consumer)
    check.callable_arg("fetcher", fetcher)
    check.store_arg(store)
    check.callable_arg("hydrator", hydrator)
    check.callable_arg("dehydrator", dehydrator)
    check.key_arg("key", key)
    check.optional_callable_arg("replay", replay)
    check.feed_arg(feed)
    ctx = core._context_arg(ctx)

    versioned = _versioned(store)
    loader = _Loader(ctx, store, hydrator, versioned)
    root = loader.load(key)
    if root is not None:

        def init() -> tuple[Model, Command[Msg]]:
            return root, None

    # batch past its checks, made above
    model: Model = core._batch(init, update, view, producer, consumer, fetcher, ctx, replay, feed)
    value = check.bytes_value(dehydrator(ctx, key, model), "dehydrator must return bytes")
    if versioned is None:
        store.store(ctx, key, value)
    else:
        versioned.store_versioned(ctx, key, value, loader.version)
    return model


def _versioned(store: Store) -> VersionedStore | None:
    """The store, if it speaks the versioned protocol (docs/contract.md#aggregate)."""
    if type(store) in check.STORES:  # the bundled stores: every one is versioned
        return cast(VersionedStore, store)
    if callable(getattr(store, "load_versioned", None)) and callable(
        getattr(store, "store_versioned", None)
    ):
        return cast(VersionedStore, store)
    return None


class _Loader:
    """Loads a model and, transitively, the read-only models it asks for, each key once."""

    def __init__(
        self,
        ctx: Context,
        store: Store,
        hydrator: Hydrator[Any],
        versioned: VersionedStore | None,
    ) -> None:
        self.ctx = ctx
        self.store = store
        self.hydrator = hydrator
        self.versioned = versioned  # loads the root key, with its version
        self.version = 0  # the root key's, as loaded
        self.loaded: dict[str, Any] = {}

    def load(self, key: str) -> Any:
        """Depth first, as recursion would, but on a stack of our own: chains of
        references may run thousands of keys deep."""
        root, references = self._hydrate(key, root=True)
        # Each frame: the references still to follow, and the load that receives
        # the frame's model once they all were (None for the root).
        stack: list[tuple[Iterator[Any], Load | None, Any]] = []
        if references is not None:
            stack.append((references, None, root))
        while stack:
            references, receive, model = stack[-1]
            reference: Any = next(references, _DONE)
            if reference is _DONE:
                stack.pop()
                if receive is not None:
                    receive(model)
                continue
            if reference is None:
                continue
            check.callable_arg("read_only_models entries", reference)
            other_key, receive = check.pair("a read_only_models entry", reference(), "(key, load)")
            if receive is None:
                continue
            check.key_arg("a read_only_models key", other_key)
            check.callable_arg("a read_only_models load", receive)
            if other_key in self.loaded:
                receive(self.loaded[other_key])
                continue
            model, references = self._hydrate(other_key)
            if references is None:
                receive(model)
            else:
                stack.append((references, receive, model))
        return root

    def _hydrate(self, key: str, root: bool = False) -> tuple[Any, Iterator[Any] | None]:
        """Load and hydrate one key: its model, and an iterator over its references.

        Read-only models are loaded with plain ``load``: only the root is saved.
        """
        if root and self.versioned is not None:
            value, self.version = check.pair(
                "store.load_versioned",
                self.versioned.load_versioned(self.ctx, key),
                "(value, version)",
            )
        else:
            value = self.store.load(self.ctx, key)
        if value is None:
            self.loaded[key] = None
            return None, None
        value = check.bytes_value(value, "store.load must return bytes or None")
        model, references = check.pair(
            "hydrator", self.hydrator(self.ctx, key, value), "(model, read_only_models)"
        )
        self.loaded[key] = model  # before the references: a cycle back here terminates
        if references is None:
            return model, None
        return model, _iterable("read_only_models", references)


_DONE = object()  # the end of a frame's references


def _iterable(name: str, value: Any) -> Iterator[Any]:
    if isinstance(value, check.TEXT):
        raise TypeError(f"{name} must be None or an iterable, got {type(value).__name__}")
    try:
        return iter(value)
    except TypeError:
        raise TypeError(f"{name} must be None or an iterable, got {type(value).__name__}") from None

"""A dict-backed store: for tests and for state that need not outlive the process."""

from __future__ import annotations

import threading
from typing import Any

from .. import _validate as check
from .._errors import Conflict
from ._keys import items_arg, key_value, keys_arg, version_arg


class MemoryStore:
    """A thread-safe in-memory key-value store of bytes, with a version per key."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, tuple[bytes, int]] | None = {}

    def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        return self.load_versioned(ctx, key)[0]

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value`` (last writer wins); bumps its version."""
        value = key_value(key, value)
        with self._lock:
            data = self._open()
            data[key] = (value, data.get(key, (b"", 0))[1] + 1)

    def load_versioned(self, ctx: Any, key: str) -> tuple[bytes | None, int]:
        """The value at ``key`` and its version: ``(None, 0)`` when absent."""
        check.key_arg("key", key)
        with self._lock:
            return self._open().get(key, (None, 0))

    def store_versioned(self, ctx: Any, key: str, value: bytes, version: int) -> int:
        """Set ``key`` to ``value`` if its version is still ``version``; returns the new one.

        Raises :class:`~elmstate.Conflict`, storing nothing, if it is not.
        """
        value = key_value(key, value)
        version = version_arg(version)
        with self._lock:
            data = self._open()
            actual = data.get(key, (b"", 0))[1]
            if actual != version:
                raise Conflict(key, version, actual)
            data[key] = (value, version + 1)
        return version + 1

    def load_many_versioned(self, ctx: Any, keys: Any) -> list[tuple[bytes | None, int]]:
        """The value and version of each of ``keys``, in their order, read at one moment."""
        given = keys_arg(keys)
        with self._lock:
            data = self._open()
            return [data.get(key, (None, 0)) for key in given]

    def store_many_versioned(self, ctx: Any, items: Any) -> list[int]:
        """Set every ``(key, value, version)`` of ``items`` if every key is still at
        its ``version``; returns the new versions, in order.

        Raises :class:`~elmstate.Conflict` for the first item whose version differs,
        storing nothing at all.
        """
        keys, values, versions = items_arg(items)
        with self._lock:
            data = self._open()
            for key, version in zip(keys, versions):
                actual = data.get(key, (b"", 0))[1]
                if actual != version:
                    raise Conflict(key, version, actual)
            for key, value, version in zip(keys, values, versions):
                data[key] = (value, version + 1)
        return [version + 1 for version in versions]

    def close(self) -> None:
        """Drop every value; idempotent. Later calls raise ``ValueError``."""
        with self._lock:
            self._data = None

    def __enter__(self) -> MemoryStore:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def __len__(self) -> int:
        with self._lock:
            return len(self._open())

    def __contains__(self, key: object) -> bool:
        with self._lock:
            return key in self._open()

    def _open(self) -> dict[str, tuple[bytes, int]]:
        if self._data is None:
            raise ValueError("the MemoryStore is closed")
        return self._data


check.register(check.STORES, MemoryStore)

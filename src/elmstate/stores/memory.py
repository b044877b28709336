"""A dict-backed store: for tests and for state that need not outlive the process."""

from __future__ import annotations

import threading
from typing import Any

from .. import _validate as check
from ._keys import key_value


class MemoryStore:
    """A thread-safe in-memory key-value store of bytes."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._data: dict[str, bytes] = {}

    def load(self, ctx: Any, key: str) -> bytes | None:
        """The value at ``key``, or ``None`` when absent."""
        check.key_arg("key", key)
        with self._lock:
            return self._data.get(key)

    def store(self, ctx: Any, key: str, value: bytes) -> None:
        """Set ``key`` to ``value``."""
        value = key_value(key, value)
        with self._lock:
            self._data[key] = value

    def __len__(self) -> int:
        return len(self._data)

    def __contains__(self, key: object) -> bool:
        return key in self._data

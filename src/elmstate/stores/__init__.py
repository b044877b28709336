"""Key-value stores for aggregate snapshots: ``load(ctx, key)`` and ``store(ctx, key, value)``."""

from .memory import MemoryStore
from .sqlite import SQLiteStore

__all__ = ["MemoryStore", "SQLiteStore"]

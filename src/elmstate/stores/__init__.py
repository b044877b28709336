"""Key-value stores for aggregate snapshots: ``load(ctx, key)`` and ``store(ctx, key, value)``."""

from .memory import MemoryStore
from .sqlite import AsyncSQLiteStore, SQLiteStore

__all__ = ["AsyncSQLiteStore", "MemoryStore", "SQLiteStore"]

"""elmstate on asyncio: ``await aio.run(...)``, ``aio.batch`` and ``aio.aggregate``
follow the very tick and rules of the synchronous modes, on the running event
loop, without starting a thread; command entries may be ``async def``
(docs/asyncio.md).
"""

from ._buffer import Buffer, BufferConsumer
from ._modes import aggregate, batch, run

__all__ = ["Buffer", "BufferConsumer", "aggregate", "batch", "run"]

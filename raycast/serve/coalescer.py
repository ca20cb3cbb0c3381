"""The Coalescer: how each serving stage batches concurrent requests, taking whatever queued while a slot was busy.

``@serve.batch`` forms the next batch as soon as its wait time is up, even while the previous batch still holds
the only slot; for a stage that awaits other replicas (a fan-out) that gives batches of one under load, each
waiting its turn. :class:`Coalescer` instead starts a batch only when one of its ``slots`` is free and then takes
everything queued: an idle service adds no wait at all, a busy one batches as much as arrived during the
previous call. The base models use it too (their forward pass blocks the replica's event loop, so requests
pile up during it and the next batch takes them all): ``@serve.batch`` measured about 1 ms slower per
sequential request there and no faster under load.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Awaitable, Callable, Sequence
from typing import Generic, TypeVar

T = TypeVar("T")
R = TypeVar("R")


class Coalescer(Generic[T, R]):
    """``await submit(item)`` -> ``fn([items...])[i]``, with at most ``slots`` calls of ``fn`` in flight."""

    def __init__(self, fn: Callable[[list[T]], Awaitable[Sequence[R]]], max_items: int, slots: int = 2,
                 size: Callable[[T], int] = lambda _: 1):  # fmt: skip
        self._fn = fn
        self._max_items = max_items
        self._free = slots
        self._size = size
        self._pending: deque[tuple[T, asyncio.Future]] = deque()
        self._tasks: set[asyncio.Task] = set()

    async def submit(self, item: T) -> R:
        future = asyncio.get_running_loop().create_future()
        self._pending.append((item, future))
        self._start_batches()
        return await future

    def _start_batches(self) -> None:
        while self._free and self._pending:
            batch, total = [], 0
            # Always take one item, however large, so an oversized request still goes (alone).
            while self._pending and (not batch or total + self._size(self._pending[0][0]) <= self._max_items):
                item, future = self._pending.popleft()
                if not future.cancelled():  # the client went away while it waited
                    batch.append((item, future))
                    total += self._size(item)
            if not batch:
                continue
            self._free -= 1
            task = asyncio.get_running_loop().create_task(self._run(batch))
            self._tasks.add(task)  # a strong reference: the loop keeps only weak ones
            task.add_done_callback(self._tasks.discard)

    async def _run(self, batch: list[tuple[T, asyncio.Future]]) -> None:
        try:
            results = await self._fn([item for item, _ in batch])
            for (_, future), result in zip(batch, results, strict=True):
                if not future.done():
                    future.set_result(result)
        except BaseException as err:  # every waiter must hear about it, or it would wait forever
            for _, future in batch:
                if not future.done():
                    future.set_exception(err)
            if not isinstance(err, Exception):
                raise
        finally:
            self._free += 1
            self._start_batches()

"""Micro-batching: concurrent requests share one model call.

On a CPU a batch of 16 images costs far less than 16 calls of one (the weights are read once and the
convolutions vectorise across the batch), so when requests overlap the server waits up to `window_ms` for
more images and runs them together. A lone request waits at most that window. `benchmarks/serve_load.py`
measures the effect (`results/benchmarks/serve_load.txt`): for a light model, HTTP and decoding cost more than
the model call, so waiting does not pay and the server leaves it off unless asked; it pays for heavier models.

At most `max_pending` images wait for or are in a model call at once; a request that would pass that is
refused at once with `Overloaded` (the server answers 503 with Retry-After) instead of queueing without bound.
"""

from __future__ import annotations

import asyncio

import numpy as np


class Overloaded(Exception):
    """The model has more images waiting than the queue holds: try again shortly."""


class Batcher:
    def __init__(self, predict, max_batch: int = 64, window_ms: float = 0.0, on_batch=None, max_pending: int = 256):
        if max_pending < 1:
            raise ValueError("max_pending must be at least 1")
        self.predict, self.max_batch, self.window = predict, max_batch, window_ms / 1e3
        self.max_pending = max_pending
        self.on_batch = on_batch or (lambda size: None)
        self.pending = 0  # images admitted and not yet answered (waiting or in a model call)
        self._queue: asyncio.Queue | None = None
        self._worker: asyncio.Task | None = None

    async def start(self):
        # Never full: admission below counts images, and every queued item holds at least one.
        self._queue = asyncio.Queue(maxsize=self.max_pending)
        self._worker = asyncio.create_task(self._run())

    async def stop(self):
        if self._worker:
            self._worker.cancel()
            await asyncio.gather(self._worker, return_exceptions=True)

    async def __call__(self, images: np.ndarray) -> np.ndarray:
        """Probabilities for `images`, computed in a batch with whatever other requests arrive meanwhile."""
        count = len(images)
        if self.pending + count > self.max_pending:
            raise Overloaded(
                f"the model has {self.pending} images waiting (at most {self.max_pending}); try again in a second"
            )
        self.pending += count
        try:
            if self.window <= 0 or self._queue is None:
                self.on_batch(count)
                return await asyncio.to_thread(self.predict, images)
            future = asyncio.get_running_loop().create_future()
            self._queue.put_nowait((images, future))
            return await future
        finally:
            self.pending -= count

    async def _run(self):
        loop = asyncio.get_running_loop()
        while True:
            items = [await self._queue.get()]
            count, deadline = len(items[0][0]), loop.time() + self.window
            while count < self.max_batch:
                timeout = deadline - loop.time()
                if timeout <= 0:
                    break
                try:
                    item = await asyncio.wait_for(self._queue.get(), timeout)
                except asyncio.TimeoutError:
                    break
                items.append(item)
                count += len(item[0])
            items = [(images, future) for images, future in items if not future.done()]  # callers that gave up
            if not items:
                continue
            count = sum(len(images) for images, _ in items)
            self.on_batch(count)
            try:
                probabilities = await asyncio.to_thread(self.predict, np.concatenate([images for images, _ in items]))
            except Exception as exc:  # noqa: BLE001 - handed to every waiting request, the worker keeps running
                for _, future in items:
                    if not future.done():
                        future.set_exception(exc)
                continue
            start = 0
            for images, future in items:
                if not future.done():
                    future.set_result(probabilities[start : start + len(images)])
                start += len(images)

"""Dynamic micro-batching: concurrent requests share one model call.

One network call on 16 patches costs far less than 16 calls on one patch, so under load the
server should score whatever has queued up together. A single worker task takes the first
waiting request, gathers more for at most ``max_wait_s`` (a couple of milliseconds) or until
``max_batch``, runs ONE ``Predictor`` call in a worker thread (the event loop keeps accepting
requests meanwhile), and resolves each request's future with its own row. While a call runs,
new requests queue up, so batches grow by themselves exactly when clients do.

Waiting only pays when company is on its way: callers announce work that will reach the
batcher soon (``incoming()``, around decoding an upload), and the worker waits up to
``max_wait_s`` only while such work exists. A lone client is scored at once, with no added
latency; many clients still fill batches.

Each row of a batched call is computed independently by the network (eval mode, no
cross-sample statistics), so a request gets the same answer alone or in a batch.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import numpy as np

from idcscan.runtime.predictor import Predictor


@dataclass(frozen=True)
class Scored:
    """One request's answer: calibrated P(IDC) and, when asked for, its CAM map (h, w)."""

    probability: float
    cam: np.ndarray | None = None


@dataclass
class BatchStats:
    """Counters for tests, /health and tuning."""

    batches: int = 0
    items: int = 0
    largest_batch: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many such batches

    def record(self, size: int) -> None:
        self.batches += 1
        self.items += size
        self.largest_batch = max(self.largest_batch, size)
        self.sizes[size] = self.sizes.get(size, 0) + 1

    def as_dict(self) -> dict[str, object]:
        return {
            "batches": self.batches,
            "items": self.items,
            "largest_batch": self.largest_batch,
            "mean_batch": round(self.items / self.batches, 3) if self.batches else 0.0,
        }


@dataclass
class _Request:
    patch: np.ndarray
    cam: bool
    future: asyncio.Future


class MicroBatcher:
    """Queue single patches from many coroutines; score them in shared batches."""

    def __init__(self, predictor: Predictor, max_batch: int = 32, max_wait_s: float = 0.002):
        if max_batch < 1:
            raise ValueError("max_batch must be >= 1")
        self.predictor = predictor
        self.max_batch = max_batch
        self.max_wait_s = max_wait_s
        self.stats = BatchStats()
        # One thread: calls run one after another (ONNX Runtime already uses every core per
        # call), and queued requests pile up into the next batch meanwhile.
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="idcscan-infer")
        self._queue: asyncio.Queue[_Request] | None = None
        self._worker: asyncio.Task | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._incoming = 0  # announced requests not yet queued (see ``incoming``)

    @contextlib.contextmanager
    def incoming(self) -> Iterator[None]:
        """Announce a request that will call ``predict`` shortly (e.g. while its upload is
        decoded), so a batch being collected waits for it instead of leaving without it."""
        self._incoming += 1
        try:
            yield
        finally:
            self._incoming -= 1

    def _ensure_worker(self) -> asyncio.Queue[_Request]:
        """Start the worker on the running loop (lazily: test clients may skip lifespan)."""
        loop = asyncio.get_running_loop()
        if self._loop is not loop or self._worker is None or self._worker.done():
            self._loop = loop
            self._queue = asyncio.Queue()
            self._worker = loop.create_task(self._run(self._queue), name="idcscan-batcher")
        assert self._queue is not None
        return self._queue

    async def predict(self, patch: np.ndarray, cam: bool = False) -> Scored:
        """Score one uint8 patch (P, P, 3); waits for the batch it lands in."""
        queue = self._ensure_worker()
        future = asyncio.get_running_loop().create_future()
        await queue.put(_Request(np.asarray(patch, dtype=np.uint8), cam, future))
        return await future

    async def predict_many(self, patches: list[np.ndarray], cam: bool = False) -> list[Scored]:
        """Score several patches (one upload batch); they share batches with everyone else."""
        return list(await asyncio.gather(*(self.predict(p, cam=cam) for p in patches)))

    async def _collect(self, queue: asyncio.Queue[_Request]) -> list[_Request]:
        batch = [await queue.get()]
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        while len(batch) < self.max_batch:
            try:
                batch.append(queue.get_nowait())
                continue
            except asyncio.QueueEmpty:
                pass
            if self._incoming <= 0:
                break  # nobody else is on the way: go now
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            try:
                batch.append(await asyncio.wait_for(queue.get(), remaining))
            except asyncio.TimeoutError:
                break
        return batch

    def _score(self, patches: np.ndarray, with_cam: bool) -> tuple[np.ndarray, np.ndarray | None]:
        if with_cam:
            probs, cams = self.predictor.predict_with_cam(patches)
            return probs, cams
        return self.predictor.predict_proba(patches), None

    async def _run(self, queue: asyncio.Queue[_Request]) -> None:
        loop = asyncio.get_running_loop()
        while True:
            batch = await self._collect(queue)
            live = [r for r in batch if not r.future.done()]  # skip clients that went away
            if not live:
                continue
            with_cam = any(r.cam for r in live)
            patches = np.stack([r.patch for r in live])
            try:
                probs, cams = await loop.run_in_executor(
                    self._executor, self._score, patches, with_cam
                )
            except Exception as exc:  # hand the failure to every waiting request
                for r in live:
                    if not r.future.done():
                        r.future.set_exception(exc)
                continue
            self.stats.record(len(live))
            for i, r in enumerate(live):
                if not r.future.done():
                    cam = cams[i] if (cams is not None and r.cam) else None
                    r.future.set_result(Scored(float(probs[i]), cam))

    async def aclose(self) -> None:
        """Stop the worker (server shutdown); pending requests are cancelled."""
        worker, self._worker = self._worker, None
        if worker is not None and not worker.done():
            worker.cancel()
            with contextlib.suppress(asyncio.CancelledError, RuntimeError):
                await worker
        if self._queue is not None:
            while not self._queue.empty():
                request = self._queue.get_nowait()
                if not request.future.done():
                    request.future.cancel()

    def shutdown(self) -> None:
        self._executor.shutdown(wait=False, cancel_futures=True)

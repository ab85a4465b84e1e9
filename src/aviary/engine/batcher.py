"""Dynamic batching across callers: one scheduler thread per loaded model.

Sync requests, jobs and long-form chunks all `submit` single utterances and get a
`concurrent.futures.Future` each. The scheduler thread takes up to `max_batch` pending items and
runs them as one engine call:

- **Short waits, only under load.** When an item arrives at an idle batcher and items have been
  arriving slower than `max_wait` apart, it runs at once (a lone request pays no batching delay);
  otherwise the batch waits up to `max_wait` to fill. Callers say when an item is on its way
  (`preparing()`: decoding, planning the next chunk); while some are, a batch that is not full
  waits for them, up to a quarter of the last batch's run time (at least `max_wait`). Under a
  closed loop of clients, whose next requests are decoded while a batch runs, batches stay full,
  and the engine waits at most a fraction of what a half-empty batch would cost.
- **Fair between callers.** Items are queued per owner (a request, a job); a batch takes them
  round-robin, oldest owner first, so one 10-hour job's chunks cannot starve short requests.
- **Little padding, bounded memory.** Among the items chosen, those more than twice as long as the
  first (the longest-waiting owner's), then those shorter than half the longest left, wait for the
  next batch (at the front of their owner's queue, and first in line), unless that would leave the
  batch with one item: lengths alternate, and nobody waits more than one batch for it. A batch
  holds at most `max_seconds` of padded audio (items x the longest), which bounds how long one
  batch runs (so how long a request waits behind another's) and, for engines that encode a batch
  whole, its memory. An item longer than that runs alone.
- **One failure fails one item.** When a batch raises, each of its items is run alone, and only
  the ones that fail again get the error.
- **Cancelling a caller removes its pending items**: `Future.cancel()` on an item not yet taken, or
  `cancel(owner)` for all of them; a cancelled item never reaches the engine.
"""

from __future__ import annotations

import itertools
import logging
import threading
import time
from collections import OrderedDict, deque
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Final

from aviary.types import SAMPLE_RATE

if TYPE_CHECKING:
    from collections.abc import Hashable, Iterator

    from aviary.engine.base import Engine
    from aviary.types import Audio, TranscribeOptions, Transcript

logger = logging.getLogger(__name__)

_ARRIVAL_MEMORY: Final = 0.8  # weight of the past in the inter-arrival average


@dataclass(eq=False)
class _Item:
    audio: Audio
    options: TranscribeOptions
    owner: Hashable
    future: Future[Transcript] = field(default_factory=Future)


@dataclass(frozen=True)
class BatchStats:
    """What a batcher has done so far."""

    batches: int
    items: int
    largest: int
    busy: float = 0.0  # seconds spent in engine calls

    @property
    def mean_batch(self) -> float:
        """Items per engine call."""
        return self.items / self.batches if self.batches else 0.0


class BatcherClosedError(RuntimeError):
    """The batcher was closed before the item ran."""


class Batcher:
    """Collects single utterances from many threads into engine batches."""

    def __init__(
        self, engine: Engine, *, max_batch: int = 16, max_wait: float = 0.01, max_seconds: float | None = None
    ) -> None:
        """Start the scheduler thread for `engine`; `max_seconds` caps a batch's padded audio (None: no cap)."""
        self.engine = engine
        self.max_batch = max(1, max_batch)
        self.max_samples = int(max_seconds * SAMPLE_RATE) if max_seconds else 0
        self.max_wait = max(0.0, max_wait)
        self._queues: OrderedDict[Hashable, deque[_Item]] = OrderedDict()
        self._pending = 0
        self._condition = threading.Condition()
        self._closed = False
        self._last_arrival = 0.0
        self._gap = float("inf")  # average seconds between arrivals
        self._coming = 0  # callers preparing an item
        self._last_run = 0.0  # seconds the last batch took
        self._anonymous = itertools.count()
        self._batches = self._items = self._largest = 0
        self._busy = 0.0
        self._thread = threading.Thread(target=self._run, name=f"aviary-batcher-{engine.info.name}", daemon=True)
        self._thread.start()

    def submit(self, audio: Audio, options: TranscribeOptions, *, owner: Hashable = None) -> Future[Transcript]:
        """Queue one utterance; its future holds its transcript or its own error.

        `owner` groups a caller's items for fairness and `cancel`; None: the item is its own owner.

        Raises:
            BatcherClosedError: the batcher is closed.
        """
        item = _Item(audio, options, owner if owner is not None else ("item", next(self._anonymous)))
        with self._condition:
            if self._closed:
                raise BatcherClosedError(self.engine.info.name)
            now = time.monotonic()
            if self._last_arrival:
                gap = now - self._last_arrival
                past = self._gap if self._gap != float("inf") else gap
                self._gap = _ARRIVAL_MEMORY * past + (1 - _ARRIVAL_MEMORY) * gap
            self._last_arrival = now
            self._queues.setdefault(item.owner, deque()).append(item)
            self._pending += 1
            self._condition.notify()
        return item.future

    @contextmanager
    def preparing(self) -> Iterator[None]:
        """Hold while making an item this batcher will get (decoding audio): a batch may wait for it."""
        with self._condition:
            self._coming += 1
        try:
            yield
        finally:
            with self._condition:
                self._coming -= 1
                self._condition.notify()

    def cancel(self, owner: Hashable) -> int:
        """Cancel every pending item of `owner`; how many were cancelled."""
        with self._condition:
            items = self._queues.pop(owner, deque())
            self._pending -= len(items)
        return sum(item.future.cancel() for item in items)

    @property
    def pending(self) -> int:
        """Items waiting for a batch."""
        return self._pending

    def stats(self) -> BatchStats:
        """Batches run and items in them so far."""
        with self._condition:
            return BatchStats(self._batches, self._items, self._largest, self._busy)

    def close(self, timeout: float = 30.0) -> None:
        """Stop taking items, fail the pending ones, and wait for the running batch."""
        with self._condition:
            self._closed = True
            queues, self._queues = self._queues, OrderedDict()
            self._pending = 0
            self._condition.notify_all()
        for queue in queues.values():
            for item in queue:
                if item.future.set_running_or_notify_cancel():
                    item.future.set_exception(BatcherClosedError(self.engine.info.name))
        self._thread.join(timeout)

    def _run(self) -> None:
        while True:
            batch = self._take()
            if batch is None:
                return
            if batch:
                self._execute(batch)

    def _take(self) -> list[_Item] | None:
        """The next batch (empty when every item taken was cancelled), or None once closed."""
        with self._condition:
            while not self._pending and not self._closed:
                self._condition.wait()
            if self._pending < self.max_batch and (self._gap < self.max_wait or self._coming):  # let it fill
                now = time.monotonic()
                quick = now + self.max_wait
                patient = now + max(self.max_wait, self._last_run / 4)
                while self._pending < self.max_batch and not self._closed:
                    left = (patient if self._coming else quick) - time.monotonic()
                    if left <= 0:
                        break
                    self._condition.wait(left)
            if self._is_closed():
                return None
            return [item for item in self._round_robin() if item.future.set_running_or_notify_cancel()]

    def _is_closed(self) -> bool:
        return self._closed  # read through a call: another thread sets it while this one waits

    def _round_robin(self) -> list[_Item]:
        """Up to `max_batch` items, one per owner per turn, the longest-waiting owners first."""
        chosen: list[_Item] = []
        while self._queues and len(chosen) < self.max_batch:
            for owner in list(self._queues):
                queue = self._queues[owner]
                chosen.append(queue.popleft())
                self._pending -= 1
                if not queue:
                    del self._queues[owner]
                else:
                    self._queues.move_to_end(owner)
                if len(chosen) == self.max_batch:
                    break
        keep = self._shape(chosen)
        if len(keep) < len(chosen):
            kept = {id(item) for item in keep}
            for item in reversed([item for item in chosen if id(item) not in kept]):
                self._queues.setdefault(item.owner, deque()).appendleft(item)
                self._queues.move_to_end(item.owner, last=False)
                self._pending += 1
        return keep

    def _shape(self, chosen: list[_Item]) -> list[_Item]:
        """The items of `chosen` that run now: similar lengths, within the padded-audio cap.

        The first item, the longest-waiting caller's, always runs: only items more than twice its
        length wait, then those under half the longest left. So a short request behind a long
        caller's chunks waits one batch at most, and the long ones go next.
        """
        if not chosen:
            return chosen
        anchor = len(chosen[0].audio)
        near = [item for item in chosen if len(item.audio) <= 2 * anchor]
        longest = max(len(item.audio) for item in near)
        keep = [item for item in near if 2 * len(item.audio) >= longest]
        if len(keep) <= 1:
            keep = chosen
        if self.max_samples:  # padded size: every item takes the longest one's length
            fitting: list[_Item] = []
            longest = 0
            for item in keep:
                padded = max(longest, len(item.audio))
                if not fitting or (len(fitting) + 1) * padded <= self.max_samples:
                    fitting.append(item)
                    longest = padded
            keep = fitting
        return keep

    def _execute(self, batch: list[_Item]) -> None:
        with self._condition:
            self._batches += 1
            self._items += len(batch)
            self._largest = max(self._largest, len(batch))
        started = time.monotonic()
        try:
            transcripts = self.engine.transcribe([item.audio for item in batch], [item.options for item in batch])
        except Exception as exc:  # noqa: BLE001  (delivered to the callers, one by one)
            if len(batch) == 1:
                self._count_busy(started)
                batch[0].future.set_exception(exc)
                return
            logger.info("a batch of %d failed (%s); running its items one by one", len(batch), type(exc).__name__)
            for item in batch:
                self._alone(item)
            self._count_busy(started)
            return
        self._last_run = self._count_busy(started)
        for item, transcript in zip(batch, transcripts, strict=True):
            item.future.set_result(transcript)

    def _count_busy(self, started: float) -> float:
        """Add the engine time since `started` to the stats; that time."""
        elapsed = time.monotonic() - started
        with self._condition:
            self._busy += elapsed
        return elapsed

    def _alone(self, item: _Item) -> None:
        try:
            transcript = self.engine.transcribe([item.audio], [item.options])[0]
        except Exception as exc:  # noqa: BLE001  (this item's own error)
            item.future.set_exception(exc)
        else:
            item.future.set_result(transcript)

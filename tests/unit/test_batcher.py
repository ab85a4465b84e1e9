"""The dynamic batcher: same results as one at a time, failures and cancels kept to their caller, fairness."""

from __future__ import annotations

import threading
import time
from concurrent.futures import CancelledError

import numpy as np
import pytest

from aviary.engine.batcher import Batcher, BatcherClosedError
from aviary.errors import InferenceError
from aviary.testing import FakeEngine
from aviary.types import SAMPLE_RATE, TranscribeOptions
from tests.support.jobs import engine as digits_engine
from tests.support.longaudio import long_recording

OPTIONS = TranscribeOptions()


def _tone(seconds: float, marker: float = 0.1) -> np.ndarray:
    return np.full(int(seconds * SAMPLE_RATE), marker, dtype=np.float32)


class Gate:
    """An engine's `text` that blocks its first call until opened, and records every item's length."""

    def __init__(self) -> None:
        self.opened = threading.Event()
        self.entered = threading.Event()
        self.lengths: list[int] = []

    def __call__(self, audio: np.ndarray) -> str:
        self.entered.set()
        self.opened.wait(10)
        self.lengths.append(len(audio))
        return f"len{len(audio)}"


def test_mixed_lengths_in_batches_give_the_tokens_of_one_at_a_time() -> None:
    engine = digits_engine()
    recording = long_recording(120, seed=3)
    pieces = [
        recording.audio[int(u.start * SAMPLE_RATE) - 3200 : int(u.end * SAMPLE_RATE) + 3200]
        for u in recording.utterances[:20]
    ]
    alone = [engine.transcribe([piece], [OPTIONS])[0] for piece in pieces]
    batcher = Batcher(engine, max_batch=8, max_wait=0.05)
    try:
        together = [future.result(60) for future in [batcher.submit(piece, OPTIONS) for piece in pieces]]
        stats = batcher.stats()
    finally:
        batcher.close()
    assert stats.largest > 1, stats  # they were batched
    assert [t.tokens for t in together] == [t.tokens for t in alone]
    assert [t.words for t in together] == [t.words for t in alone]
    assert sum(bool(t.text) for t in alone) == len(pieces)


def test_an_item_that_raises_fails_alone() -> None:
    gate, entered = threading.Event(), threading.Event()

    def text(audio: np.ndarray) -> str:
        entered.set()
        gate.wait(10)
        if audio[0] == np.float32(0.5):
            name = "fake"
            raise InferenceError(name)
        return "fine"

    engine = FakeEngine(text=text)
    batcher = Batcher(engine, max_batch=8)
    try:
        first = batcher.submit(_tone(1.0), OPTIONS)  # runs alone, holding the thread while the rest queue up
        assert entered.wait(10)
        rest = [batcher.submit(_tone(1.0, 0.5 if i == 2 else 0.1), OPTIONS) for i in range(5)]
        gate.set()
        assert first.result(10).text == "fine"
        for i, future in enumerate(rest):
            if i == 2:
                with pytest.raises(InferenceError):
                    future.result(10)
            else:
                assert future.result(10).text == "fine"
    finally:
        batcher.close()
    assert [size for size, _ in engine.calls][:2] == [1, 5]  # the batch of five failed, then one by one


def test_a_cancelled_callers_items_never_run() -> None:
    gate = Gate()
    engine = FakeEngine(text=gate)
    batcher = Batcher(engine, max_batch=16)
    try:
        blocker = batcher.submit(_tone(0.5), OPTIONS, owner="a")
        assert gate.entered.wait(10)
        withdrawn = [batcher.submit(_tone(2.0), OPTIONS, owner="job") for _ in range(3)]
        single = batcher.submit(_tone(3.0), OPTIONS, owner="b")
        kept = [batcher.submit(_tone(1.0), OPTIONS, owner="c") for _ in range(2)]
        assert batcher.cancel("job") == 3
        assert single.cancel()
        gate.opened.set()
        assert blocker.result(10).text == f"len{SAMPLE_RATE // 2}"
        assert [f.result(10).text for f in kept] == [f"len{SAMPLE_RATE}"] * 2
    finally:
        batcher.close()
    for future in [*withdrawn, single]:
        with pytest.raises(CancelledError):
            future.result(0)
    assert sorted(gate.lengths) == sorted([SAMPLE_RATE // 2, SAMPLE_RATE, SAMPLE_RATE])


def test_short_requests_are_not_starved_by_a_long_job() -> None:
    gate = Gate()
    engine = FakeEngine(text=gate, delay=0.1)
    batcher = Batcher(engine, max_batch=4)
    try:
        job = [batcher.submit(_tone(1.0), OPTIONS, owner="ten-hour-job") for _ in range(100)]
        finished: list[str] = []  # in the order the batcher hands results over
        for future in job:
            future.add_done_callback(lambda _: finished.append("job"))
        assert gate.entered.wait(10)
        short = batcher.submit(_tone(1.0), OPTIONS)
        short.add_done_callback(lambda _: finished.append("short"))
        gate.opened.set()
        short.result(10)
        for future in job:
            future.result(30)
    finally:
        batcher.close()
    done_before = finished.index("short")
    assert done_before <= 8, done_before  # the short one went into the second batch, not after the job


def test_a_short_request_waits_one_batch_at_most_behind_a_long_callers_chunks() -> None:
    """A long synchronous request keeps dozens of 30 s chunks queued: a 2 s request that comes while
    they run must not be held back for padding until the long one is done."""
    gate = Gate()
    engine = FakeEngine(text=gate, delay=0.02)
    batcher = Batcher(engine, max_batch=4)
    finished: list[str] = []  # in the order the batcher hands results over (its callbacks, in its thread)
    try:
        long = [batcher.submit(_tone(30.0), OPTIONS, owner="long-request") for _ in range(32)]
        for future in long:
            future.add_done_callback(lambda _: finished.append("long"))
        assert gate.entered.wait(10)
        shorts = [batcher.submit(_tone(2.0), OPTIONS)]
        shorts[0].add_done_callback(lambda _: finished.append("short"))
        gate.opened.set()
        shorts[0].result(10)
        shorts.append(batcher.submit(_tone(2.0), OPTIONS))
        submitted = finished.count("long")  # read after the submit: a late read only lowers the count below
        shorts[1].add_done_callback(lambda _: finished.append("short"))
        shorts[1].result(10)
        for future in long:
            future.result(30)
    finally:
        batcher.close()
    first = finished.index("short")  # long chunks done before the first short one
    second = finished.index("short", first + 1) - 1
    assert first <= 8, first  # the running batch and the next: 2 batches of 4
    # The batch running when it came, the one it waited out (the long caller's turn), and its own.
    assert second - submitted <= 12, (first, submitted, second)
    assert second < 32


def test_a_batch_keeps_lengths_close_and_sends_the_short_ones_next() -> None:
    gate = Gate()
    engine = FakeEngine(text=gate)
    batcher = Batcher(engine, max_batch=8)
    try:
        blocker = batcher.submit(_tone(0.1), OPTIONS)
        assert gate.entered.wait(10)
        lengths = [20.0, 1.0, 19.0, 2.0, 18.0, 1.5]
        futures = [batcher.submit(_tone(s), OPTIONS) for s in lengths]
        gate.opened.set()
        blocker.result(10)
        for future in futures:
            future.result(10)
    finally:
        batcher.close()
    assert [size for size, _ in engine.calls] == [1, 3, 3]
    assert gate.lengths[1:4] == [int(s * SAMPLE_RATE) for s in (20.0, 19.0, 18.0)]


def test_closing_fails_what_waits_and_refuses_more() -> None:
    gate = Gate()
    engine = FakeEngine(text=gate)
    batcher = Batcher(engine)
    running = batcher.submit(_tone(0.1), OPTIONS)
    assert gate.entered.wait(10)
    waiting = batcher.submit(_tone(0.1), OPTIONS)
    closer = threading.Thread(target=batcher.close)
    closer.start()
    with pytest.raises(BatcherClosedError):
        waiting.result(10)
    gate.opened.set()
    closer.join(10)
    assert running.result(10).text == "len1600"
    with pytest.raises(BatcherClosedError):
        batcher.submit(_tone(0.1), OPTIONS)


def test_a_lone_request_runs_at_once_and_a_busy_stream_is_batched() -> None:
    engine = FakeEngine(delay=0.05)
    batcher = Batcher(engine, max_batch=8, max_wait=0.2)
    try:
        batcher.submit(_tone(0.5), OPTIONS).result(10)
        assert [size for size, _ in engine.calls] == [1]
        futures = [batcher.submit(_tone(0.5), OPTIONS) for _ in range(24)]
        for future in futures:
            future.result(10)
    finally:
        batcher.close()
    assert max(size for size, _ in engine.calls) == 8


def test_a_batch_waits_for_an_item_a_caller_is_preparing() -> None:
    gate = Gate()
    engine = FakeEngine(text=gate)
    batcher = Batcher(engine, max_batch=8, max_wait=0.001)
    submitted = threading.Event()

    def prepare_then_submit() -> None:
        with batcher.preparing():
            gate.opened.wait(10)
            time.sleep(0.05)  # decoding
            futures.append(batcher.submit(_tone(1.0), OPTIONS))
            submitted.set()

    futures = [batcher.submit(_tone(0.5), OPTIONS)]
    try:
        assert gate.entered.wait(10)
        futures.append(batcher.submit(_tone(1.0), OPTIONS))
        preparer = threading.Thread(target=prepare_then_submit)
        preparer.start()
        time.sleep(2.0)  # the first batch runs 2 s: the next may wait up to 0.5 s for a caller still preparing
        gate.opened.set()
        preparer.join(10)
        assert submitted.is_set()
        for future in futures:
            future.result(10)
    finally:
        batcher.close()
    assert [size for size, _ in engine.calls] == [1, 2]


def test_a_batch_holds_at_most_max_seconds_of_padded_audio() -> None:
    gate = Gate()
    engine = FakeEngine(text=gate)
    batcher = Batcher(engine, max_batch=16, max_seconds=3.0)
    try:
        blocker = batcher.submit(_tone(0.1), OPTIONS)
        assert gate.entered.wait(10)
        futures = [batcher.submit(_tone(s), OPTIONS) for s in (1.0, 1.0, 0.9, 1.0, 5.0, 1.0, 1.0)]
        gate.opened.set()
        for future in [blocker, *futures]:
            future.result(10)
    finally:
        batcher.close()
    sizes = [size for size, _ in engine.calls]
    assert sizes[0] == 1
    assert sum(sizes) == 8
    assert max(sizes) == 3  # 3 x 1 s fit in 3 s
    assert sizes[-1] == 1  # the 5 s item, alone
    assert gate.lengths[-1] == 5 * SAMPLE_RATE


def test_stats_count_the_time_spent_in_the_engine() -> None:
    def text(_audio: np.ndarray) -> str:
        time.sleep(0.05)
        return "slow"

    batcher = Batcher(FakeEngine(text=text), max_batch=1)
    try:
        started = time.monotonic()
        for _ in range(3):
            assert batcher.submit(_tone(0.5), OPTIONS).result(10).text == "slow"
        wall = time.monotonic() - started
        stats = batcher.stats()
    finally:
        batcher.close()
    assert stats.batches == 3
    assert 0.15 <= stats.busy <= wall

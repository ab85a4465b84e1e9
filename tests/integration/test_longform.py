"""Long audio end to end: half an hour of digits as MP3, through the decoder, the planner and the batcher."""

from __future__ import annotations

import itertools
import os
import time
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import openai
import pytest
import requests

from aviary.config import Settings
from aviary.engine.batcher import Batcher
from aviary.engine.longform import Chunking, transcribe_source, transcribe_stream
from aviary.types import SAMPLE_RATE, TranscribeOptions
from tests.support.jobs import engine
from tests.support.longaudio import Recording, encode_mp3, long_recording, wer
from tests.support.media import Encoding, encode

if TYPE_CHECKING:
    from aviary.audio import MediaInfo
    from aviary.types import Transcript
    from tests.integration.conftest import Api

OPTIONS = TranscribeOptions()
LOW_RATE_MP3 = Encoding("mp3-16k", "mp3", "libmp3lame", options=(("b", "16k"), ("compression_level", "9")))
CONTEXT = 0.2  # seconds of audio kept around an utterance transcribed on its own


@pytest.fixture(scope="module")
def half_hour(tmp_path_factory: pytest.TempPathFactory) -> tuple[Recording, Path]:
    recording = long_recording(1800, seed=0, unbroken=((600.0, 60.0), (1300.0, 75.0)))
    path = tmp_path_factory.mktemp("longform") / "half-hour.mp3"
    path.write_bytes(encode_mp3(recording))
    return recording, path


def _one_by_one(audio: np.ndarray, recording: Recording) -> list[str]:
    pieces = [
        audio[max(0, int((u.start - CONTEXT) * SAMPLE_RATE)) : int((u.end + CONTEXT) * SAMPLE_RATE)]
        for u in recording.utterances
    ]
    texts = []
    for first in range(0, len(pieces), 32):
        batch = pieces[first : first + 32]
        texts += [t.text for t in engine().transcribe(batch, [OPTIONS] * len(batch))]
    return texts


def _by_utterance(transcript: Transcript, recording: Recording) -> list[list[str]]:
    """Each word given to the utterance whose span is nearest its middle (every word within 0.25 s of one)."""
    starts = np.array([u.start for u in recording.utterances])
    ends = np.array([u.end for u in recording.utterances])
    heard: list[list[str]] = [[] for _ in recording.utterances]
    for word in transcript.words:
        middle = (word.start + word.end) / 2
        distance = np.maximum(starts - middle, 0) + np.maximum(middle - ends, 0)
        nearest = int(np.argmin(distance))
        assert distance[nearest] <= 0.25, (word, recording.utterances[nearest])
        heard[nearest].append(word.word)
    return heard


def test_half_an_hour_transcribes_as_well_as_its_utterances_one_by_one(half_hour: tuple[Recording, Path]) -> None:
    recording, path = half_hour
    decoder = Settings().audio_decoder()
    batcher = Batcher(engine(), max_batch=16)
    infos: list[MediaInfo] = []
    progress: list[float] = []
    try:
        chunking = Chunking(max_seconds=30.0)
        transcript = transcribe_source(
            decoder, batcher, path, OPTIONS, chunking, on_info=infos.append, on_progress=progress.append
        )
        decoded = decoder.decode(path)
    finally:
        batcher.close()
        decoder.close()
    assert [i.container for i in infos] == ["mp3"]
    assert infos[0].declared_seconds == pytest.approx(recording.seconds, abs=1.0)
    assert len(progress) > 1800 / 30  # once per chunk, then the whole length
    assert progress == sorted(progress)
    assert 0 < progress[0] <= 30.0
    assert progress[-1] == transcript.duration
    alone = wer(recording.text, " ".join(t for t in _one_by_one(decoded, recording) if t))
    whole = wer(recording.text, transcript.text)
    assert whole <= alone + 0.01, (whole, alone)
    assert transcript.duration == pytest.approx(recording.seconds, abs=0.05)
    assert transcript.text == " ".join(s.text for s in transcript.segments)
    # Word times are absolute: each word lies in its utterance, and read utterance by utterance
    # the words say what was said (a shifted chunk would land its words in the wrong utterances).
    heard = _by_utterance(transcript, recording)
    placed = wer(recording.text, " ".join(w for words in heard for w in words))
    assert placed <= alone + 0.01, (placed, alone)
    missed = sum(not words for words in heard)
    assert missed <= 0.01 * len(recording.utterances), missed


def test_a_quiet_recording_loses_no_words_to_the_vad() -> None:
    """Speech peaking at -45 dBFS: the model hears it, so long-form must not trim or skip it (Silero alone would).

    The tiny test model itself hears quiet speech a little worse (its own WER, utterance by utterance,
    1.0% at full scale and 1.9% here), so words are counted, not compared one by one.
    """
    recording = long_recording(150, seed=4)
    loud = recording.audio * np.float32(1.0 / np.abs(recording.audio).max())
    batcher = Batcher(engine(), max_batch=16)
    try:
        heard_loud, heard_quiet = (
            transcribe_stream(
                (audio[i : i + 160_000] for i in range(0, len(audio), 160_000)),
                lambda piece: batcher.submit(piece, OPTIONS),
                chunking=Chunking(max_seconds=30.0),
            )
            for audio in (loud, loud * np.float32(10 ** (-45 / 20)))
        )
    finally:
        batcher.close()
    assert len(heard_quiet.text.split()) >= 0.97 * len(heard_loud.text.split())
    assert heard_quiet.segments[0].start <= recording.utterances[0].start + 0.1  # its first word was not trimmed


@pytest.mark.parametrize("max_seconds", [5.0, 7.0, 11.0])
def test_words_and_segments_at_the_seams_of_short_windows_follow_each_other(max_seconds: float) -> None:
    """80 s without a pause, cut in windows of a few seconds: each window's model hears a word at the
    seam a little differently, yet no word or segment ends after the next one starts (a subtitle
    cue never overlaps the next). Without the seam rule 2 to 9 pairs overlapped here, by 10-30 ms."""
    recording = long_recording(90, seed=5, unbroken=((5.0, 80.0),))
    batcher = Batcher(engine(), max_batch=16)
    try:
        transcript = transcribe_stream(
            (recording.audio[i : i + 160_000] for i in range(0, len(recording.audio), 160_000)),
            lambda piece: batcher.submit(piece, OPTIONS),
            chunking=Chunking(max_seconds=max_seconds),
        )
    finally:
        batcher.close()
    assert wer(recording.text, transcript.text) < 0.05
    times = [(w.start, w.end) for w in transcript.words], [(s.start, s.end) for s in transcript.segments]
    for spans in times:
        for (start, end), (next_start, _) in itertools.pairwise(spans):
            assert start <= end <= next_start, (start, end, next_start)
    assert [w for s in transcript.segments for w in s.words] == list(transcript.words)


def test_the_sync_api_transcribes_minutes_with_absolute_word_times(api: Api) -> None:
    recording = long_recording(240, seed=9, unbroken=((90.0, 40.0),))
    response = requests.post(
        f"{api.url}/transcribe",
        data={"model": "parakeet", "include_words": "true"},
        files={"file": ("four-minutes.mp3", encode_mp3(recording), "audio/mpeg")},
        timeout=300,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["duration"] == pytest.approx(recording.seconds, abs=0.05)
    assert wer(recording.text, body["text"]) <= 0.05
    last = recording.utterances[-1]
    assert body["segments"][-1]["end"] == pytest.approx(last.end, abs=0.5)
    assert body["words"][-1]["end"] == pytest.approx(last.end, abs=0.5)
    assert [s["start"] for s in body["segments"]] == sorted(s["start"] for s in body["segments"])


def test_openai_streaming_sends_each_chunk_as_it_is_transcribed(api: Api) -> None:
    recording = long_recording(150, seed=10)
    client = openai.OpenAI(base_url=f"{api.url}/v1", api_key="unused", max_retries=0)
    arrivals: list[tuple[float, str]] = []
    deltas: list[str] = []
    done = ""
    started = time.monotonic()
    stream = client.audio.transcriptions.create(
        model="whisper-1", file=("minutes.mp3", encode_mp3(recording)), stream=True
    )
    for event in stream:
        arrivals.append((time.monotonic() - started, event.type))
        if event.type == "transcript.text.done":
            done = event.text
        else:
            assert event.type == "transcript.text.delta"
            deltas.append(event.delta)
    assert "".join(deltas) == done
    assert wer(recording.text, done) <= 0.05
    assert len(deltas) >= 150 // 30  # at least one per chunk
    assert arrivals[-1][1] == "transcript.text.done"


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_a_sync_request_whose_client_leaves_stops_at_the_running_batch(
    api: Api, half_hour: tuple[Recording, Path]
) -> None:
    # Half an hour of speech, and a client that gives up after half a second: the server stops
    # transcribing for nobody (its chunks waiting in the batcher are withdrawn, no more are decoded).
    body = encode(half_hour[0].audio, SAMPLE_RATE, LOW_RATE_MP3)  # under the test server's upload cap
    pid = api.running.process.pid
    before = api.running.log().count("the client disconnected")
    started = _cpu_seconds(pid)
    with pytest.raises(requests.ReadTimeout):
        requests.post(
            f"{api.url}/transcribe", data={"model": "parakeet"}, files={"file": ("m.mp3", body)}, timeout=(5, 0.5)
        )
    deadline = time.monotonic() + 30
    while api.running.log().count("the client disconnected") == before:
        assert time.monotonic() < deadline, api.running.log()[-2000:]
        time.sleep(0.05)
    spent = _cpu_seconds(pid) - started
    time.sleep(0.5)  # the batch that was running when the client left may finish
    idle = _cpu_seconds(pid)
    time.sleep(2.0)
    assert _cpu_seconds(pid) - idle < 0.5, "the server kept transcribing after its client left"
    whole = time.monotonic()
    response = requests.post(
        f"{api.url}/transcribe", data={"model": "parakeet"}, files={"file": ("m.mp3", body)}, timeout=300
    )
    assert response.status_code == 200, response.text
    # The whole file takes longer than the client waited plus the quiet time checked: without the
    # withdrawal, the server would still have been busy then.
    assert time.monotonic() - whole > 4.0
    assert spent < _cpu_seconds(pid) - idle


def test_a_stream_whose_client_leaves_stops_too(api: Api, half_hour: tuple[Recording, Path]) -> None:
    body = encode(half_hour[0].audio, SAMPLE_RATE, LOW_RATE_MP3)
    pid = api.running.process.pid
    with requests.post(
        f"{api.url}/v1/audio/transcriptions",
        data={"model": "whisper-1", "stream": "true"},
        files={"file": ("m.mp3", body)},
        stream=True,
        timeout=60,
    ) as response:
        assert response.status_code == 200, response.text
        first = next(response.iter_lines())
        assert first.startswith(b"data: ")
    started = time.monotonic()
    time.sleep(1.0)  # the batch running when the client left may finish
    idle = _cpu_seconds(pid)
    time.sleep(1.5)
    assert _cpu_seconds(pid) - idle < 0.5, "the server kept transcribing after its client left"
    assert time.monotonic() - started < 4.0  # well inside the time the whole file takes (the test above)

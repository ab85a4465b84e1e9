"""Untrusted media -> float32 mono 16 kHz chunks with PyAV, inside whitelists and caps.

FFmpeg picks the demuxer by content, but only among `DEMUXERS` (its own `format_whitelist`), reads
only through the `file` protocol or our own I/O (no network, no playlists: HLS and ffconcat files are
refused before they can open anything), and only `DECODERS` run. The first audio stream is decoded
and resampled frame by frame with swresample, and channels are averaged as NeMo does (swresample's
own downmix adds at -3 dB per channel, ~1.41x louder than the mean), so memory holds one chunk, never
the container or the whole output.

Length is bounded three ways, all before the work is spent: a duration the container declares over
the cap is refused at once; where none is declared, packets are counted without decoding (cheap: an
11-hour FLAC of silence is a few MB of packets) and refused the same; and while decoding, output
past the cap stops the decode, so a header that lies cannot make it decode everything.

This module does the decoding in whatever process calls it; `aviary.audio.isolation` runs it in a
child process so that a crash or hang of FFmpeg cannot take the server down.
"""

from __future__ import annotations

import io
import itertools
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from aviary.errors import (
    AudioTooLongError,
    DecoderMemoryError,
    EmptyFileError,
    InvalidAudioError,
    NoAudioStreamError,
    NoSamplesError,
    PayloadTooLargeError,
    TruncatedAudioError,
    UnsupportedChannelsError,
    UnsupportedCodecError,
    UnsupportedMediaError,
    UnsupportedSampleRateError,
)
from aviary.types import SAMPLE_RATE, Audio

if TYPE_CHECKING:
    from collections.abc import Iterator

    import av.container

# FFmpeg's names: demuxers, then decoders (native ones; FFmpeg's libopus/libvorbis wrappers are not needed).
# Beyond the usual audio files: the audio of MPEG program and transport streams, AVI and ASF (WMA, WMV),
# raw AC-3, and what telephony and dictation leave behind (AMR, G.722, G.726, GSM, IMA and MS ADPCM).
DEMUXERS = (
    *("wav", "w64", "aiff", "caf", "au", "mp3", "flac", "ogg", "aac", "mov", "matroska"),
    *("mpeg", "mpegts", "avi", "asf", "ac3", "eac3", "amr"),
)
DECODERS = frozenset(
    {
        *(f"pcm_{k}" for k in ("u8", "s8", "alaw", "mulaw")),
        *(f"pcm_{k}{e}" for k in ("s16", "s24", "s32", "f32", "f64") for e in ("le", "be")),
        "mp3float",
        "mp3",
        "mp2float",
        "mp2",
        "flac",
        "vorbis",
        "opus",
        "aac",
        "aac_latm",
        "alac",
        "ac3",
        "eac3",
        "wmav1",
        "wmav2",
        "amrnb",
        "g722",
        "g726",
        "gsm_ms",
        "adpcm_ima_wav",
        "adpcm_ms",
    }
)
# The first bytes of the accepted containers: a file that starts like one but that FFmpeg cannot open is
# corrupt (invalid_audio), anything else is not media we take (unsupported_media).
MAGIC = (
    *(b"RIFF", b"RF64", b"FORM", b"caff", b".snd", b"fLaC", b"OggS", b"ID3", b"\x1aE\xdf\xa3"),
    *(b"\x00\x00\x01\xba", b"0&\xb2u", b"#!AMR"),  # MPEG program stream, ASF, AMR
)
TRUNCATED = 0.9  # audio shorter than this share of its declared length (less half a second) is truncated
MIN_RATE, MAX_RATE = 8_000, 192_000
MAX_CHANNELS = 32
MICROSECONDS = 1_000_000


@dataclass(frozen=True)
class AudioLimits:
    """What one decode may cost; every field comes from Settings."""

    max_seconds: float = 36_000.0
    """Longest audio accepted (10 h)."""
    max_bytes: int = 1 << 30
    """Largest input accepted (1 GiB)."""
    max_input_samples: int = 36_000 * 48_000 * 2
    """Most samples decoded before resampling, over all channels (10 h of 48 kHz stereo)."""
    timeout_seconds: float = 600.0
    """Longest wall time the decoder may work on one input (isolated decoding only)."""
    chunk_seconds: float = 10.0
    """Output is handed over in chunks of about this length."""

    @property
    def max_samples(self) -> int:
        """Most output samples at 16 kHz."""
        return int(self.max_seconds * SAMPLE_RATE)


@dataclass(frozen=True)
class MediaInfo:
    """What the container says about the audio stream chosen."""

    container: str
    codec: str
    sample_rate: int
    channels: int
    declared_seconds: float | None


Source = Path | bytes


def check_size(source: Source, limits: AudioLimits) -> int:
    """The input's size in bytes, after refusing empty and oversized inputs.

    Raises:
        EmptyFileError: no bytes.
        PayloadTooLargeError: more than `limits.max_bytes`.
        FileNotFoundError: a path that does not exist.
    """
    size = source.stat().st_size if isinstance(source, Path) else len(source)
    if size == 0:
        raise EmptyFileError
    if size > limits.max_bytes:
        raise PayloadTooLargeError(limits.max_bytes)
    return size


def decode_chunks(source: Source, limits: AudioLimits) -> Iterator[MediaInfo | Audio]:
    """Yield the `MediaInfo`, then float32 mono 16 kHz chunks of about `limits.chunk_seconds`.

    Raises:
        EmptyFileError, PayloadTooLargeError: see `check_size`.
        UnsupportedMediaError: not media, or a container, codec, rate or channel count not accepted.
        InvalidAudioError: corrupt or truncated audio, no audio stream, or no samples.
        AudioTooLongError: longer than `limits.max_seconds` (found before decoding where possible).
    """
    check_size(source, limits)
    with _open(source) as container:
        info = _check_stream(container, limits)
    if info.declared_seconds is None:
        with _open(source) as container:
            _count_packets(container, limits)
    yield info
    total = 0
    with _open(source) as container:
        for chunk in _mono(container, limits):
            total += len(chunk)
            if total > limits.max_samples:
                raise AudioTooLongError(limits.max_seconds)
            yield chunk
    if total == 0:
        raise NoSamplesError
    if info.declared_seconds is not None and total / SAMPLE_RATE < TRUNCATED * info.declared_seconds - 0.5:
        raise TruncatedAudioError(info.declared_seconds, total / SAMPLE_RATE)


def gather(items: Iterator[MediaInfo | Audio]) -> Audio:
    """Chunks into one array, allocated once from the declared length, so memory peaks near the output."""
    out = np.empty(0, dtype=np.float32)
    filled = 0
    for item in items:
        if isinstance(item, MediaInfo):
            if item.declared_seconds is not None:
                out = np.empty(int((item.declared_seconds + 1.0) * SAMPLE_RATE), dtype=np.float32)
            continue
        if filled + len(item) > len(out):  # no declared length, or a wrong one: grow by a quarter
            grown = np.empty(max(filled + len(item), len(out) * 5 // 4), dtype=np.float32)
            grown[:filled] = out[:filled]
            out = grown
        out[filled : filled + len(item)] = item
        filled += len(item)
    return out[:filled]


def _mono(container: av.container.InputContainer, limits: AudioLimits) -> Iterator[Audio]:
    """The first audio stream decoded, then averaged and resampled by an FFmpeg filter graph, in chunks.

    The graph (pan to the channel mean, swresample to 16 kHz, regrouped into `chunk_seconds` frames)
    runs in C; Python touches each decoded frame once and each output chunk once. Done frame by frame
    in Python (a resampler call, an array and a mean per frame) this took 2.3x as long.
    """
    import av

    stream = container.streams.audio[0]
    chunk = max(1, int(limits.chunk_seconds * SAMPLE_RATE))
    graph: av.filter.Graph | None = None
    decoded = pending = due = 0
    try:
        for frame in _frames(container, stream):
            if graph is None:
                graph = _graph(frame, chunk)
                due = chunk * frame.sample_rate // SAMPLE_RATE + 1  # input samples that fill one chunk
            decoded += frame.samples * frame.layout.nb_channels
            if decoded > limits.max_input_samples:
                raise AudioTooLongError(limits.max_seconds, limit_samples=limits.max_input_samples)
            graph.push(frame)
            pending += frame.samples
            if pending >= due:  # ask only when a chunk can be ready: an empty pull raises, which costs
                pending = 0
                yield from _pull(graph)
        if graph is not None:
            graph.push(None)
            yield from _pull(graph)
    except av.error.MemoryError as exc:
        raise DecoderMemoryError from exc
    except av.error.FFmpegError as exc:
        raise InvalidAudioError from exc


def _frames(container: av.container.InputContainer, stream: av.AudioStream) -> Iterator[av.AudioFrame]:
    """The stream's frames; a last packet the decoder refuses is dropped, any other refusal raises.

    A file's last packet can be a fragment: the final partial frame of a file cut short, or the
    padding byte RIFF adds after an odd-sized data chunk (GSM in WAV with an odd number of blocks),
    which FFmpeg hands over as a 1-byte packet that its decoder refuses. Everything before it is
    good audio. A refused packet with more data after it is a corrupt file.
    """
    import av

    refused: av.error.FFmpegError | None = None
    for packet in container.demux(stream):
        if refused is not None and packet.size:
            raise refused
        try:
            frames = packet.decode()
        except av.error.InvalidDataError as exc:
            refused = exc
            continue
        yield from frames


def _graph(first: av.AudioFrame, chunk: int) -> av.filter.Graph:
    """Filters: abuffer (like `first`) -> channel mean -> float -> 16 kHz mono -> `chunk`-sample frames -> sink."""
    from fractions import Fraction

    import av.filter

    graph = av.filter.Graph()
    channels = first.layout.nb_channels
    mean = "+".join(f"{1 / channels!r}*c{i}" for i in range(channels))
    nodes = [
        graph.add_abuffer(
            sample_rate=first.sample_rate,
            format=first.format.name,
            layout=first.layout.name,
            time_base=Fraction(1, first.sample_rate),
        ),
        graph.add("pan", f"mono|c0={mean}"),
        graph.add("aformat", "sample_fmts=flt"),
        graph.add("aresample", str(SAMPLE_RATE)),
        graph.add("aformat", f"sample_fmts=flt:sample_rates={SAMPLE_RATE}:channel_layouts=mono"),
        graph.add("asetnsamples", f"n={chunk}:p=0"),
        graph.add("abuffersink"),
    ]
    for source, sink in itertools.pairwise(nodes):
        source.link_to(sink)
    graph.configure()
    return graph


def _pull(graph: av.filter.Graph) -> Iterator[Audio]:
    """Every chunk the graph has ready."""
    while True:
        try:
            frame = graph.pull()
        except (BlockingIOError, EOFError):
            return
        samples: Audio = frame.to_ndarray()[0]
        if len(samples):
            yield samples


def _open(source: Source) -> av.container.InputContainer:
    import av

    options = {"format_whitelist": ",".join(DEMUXERS), "protocol_whitelist": "file"}
    try:
        if isinstance(source, Path):
            # "file:" so that a name such as "concat:a|b" or "x:y.wav" is a file name, never a protocol.
            return av.open(f"file:{source.resolve()}", mode="r", container_options=options)
        return av.open(io.BytesIO(source), mode="r", container_options=options)
    except FileNotFoundError:
        raise
    except (av.error.FFmpegError, UnicodeDecodeError, ValueError) as exc:
        if isinstance(exc, av.error.EOFError) or _head(source).startswith(MAGIC) or _is_mp4(_head(source)):
            raise InvalidAudioError from exc
        raise UnsupportedMediaError from exc


def _head(source: Source, size: int = 16) -> bytes:
    if isinstance(source, bytes):
        return source[:size]
    with source.open("rb") as file:
        return file.read(size)


def _is_mp4(head: bytes) -> bool:
    return head[4:8] == b"ftyp"


def _check_stream(container: av.container.InputContainer, limits: AudioLimits) -> MediaInfo:
    if not container.streams.audio:
        raise NoAudioStreamError
    stream = container.streams.audio[0]
    context = stream.codec_context
    if context.name not in DECODERS:
        raise UnsupportedCodecError(context.name)
    if not MIN_RATE <= context.sample_rate <= MAX_RATE:
        raise UnsupportedSampleRateError(context.sample_rate, MIN_RATE, MAX_RATE)
    channels = context.channels
    if not 1 <= channels <= MAX_CHANNELS:
        raise UnsupportedChannelsError(channels, MAX_CHANNELS)
    declared = _declared_seconds(container, stream)
    if declared is not None and declared > limits.max_seconds:
        raise AudioTooLongError(limits.max_seconds)
    return MediaInfo(container.format.name, context.name, context.sample_rate, channels, declared)


def _declared_seconds(container: av.container.InputContainer, stream: av.AudioStream) -> float | None:
    """The stream's length as the container declares it (not estimated from the bit rate)."""
    if stream.duration is not None and stream.time_base is not None and stream.duration > 0:
        return float(stream.duration * stream.time_base)
    if container.duration is not None and container.duration > 0:
        return container.duration / MICROSECONDS
    return None


def _count_packets(container: av.container.InputContainer, limits: AudioLimits) -> None:
    """Sum the audio packets' durations without decoding; refuse once past the cap."""
    import av

    stream = container.streams.audio[0]
    if stream.time_base is None:
        return
    cap = limits.max_seconds / stream.time_base
    total = 0
    try:
        for packet in container.demux(stream):
            total += packet.duration or 0
            if total > cap:
                raise AudioTooLongError(limits.max_seconds)
    except av.error.FFmpegError:
        return  # the decode reports what is wrong with the data

"""Media files made at test time: speech encoded by PyAV into every container and codec Aviary accepts."""

from __future__ import annotations

import io
from dataclasses import dataclass
from fractions import Fraction
from typing import cast

import av
import numpy as np
import numpy.typing as npt


@dataclass(frozen=True)
class Encoding:
    """How to write one test file."""

    name: str
    container: str
    codec: str
    rate: int = 16_000
    channels: int = 1
    sample_format: str | None = None
    video: str | None = None  # a video codec: the file is a video with an audio track
    options: tuple[tuple[str, str], ...] = ()
    slack: float = 0.0  # seconds the codec may add or drop: its delay, or the padding of its last block
    telephony: bool = False  # a telephone-band speech codec (8 kHz, ~12 kbit/s): a digit may be misheard

    def understood(self, heard: str, said: str) -> bool:
        """Whether `heard` is what the digits model should make of `said` sent in this encoding.

        The same words; through a telephony codec, at most one of them another digit (the tiny test model
        mishears some digits even in 16-bit WAV; a decoder fault would lose or garble far more).
        """
        if not self.telephony:
            return heard == said
        heard_words, said_words = heard.split(), said.split()
        wrong = sum(h != s for h, s in zip(heard_words, said_words, strict=False))
        return len(heard_words) == len(said_words) and wrong <= 1

    @property
    def layout(self) -> str:
        """FFmpeg's channel layout name."""
        return {1: "mono", 2: "stereo", 6: "5.1"}[self.channels]


ENCODINGS = (
    Encoding("wav-u8", "wav", "pcm_u8", rate=8_000),
    Encoding("wav-s16", "wav", "pcm_s16le", rate=16_000),
    Encoding("wav-s24-96k", "wav", "pcm_s24le", rate=96_000, channels=2),
    Encoding("wav-s32", "wav", "pcm_s32le", rate=22_050),
    Encoding("wav-f32-192k", "wav", "pcm_f32le", rate=192_000),
    Encoding("wav-mulaw", "wav", "pcm_mulaw", rate=8_000),
    Encoding("mp3-44k-stereo", "mp3", "libmp3lame", rate=44_100, channels=2),
    Encoding("flac-48k-5.1", "flac", "flac", rate=48_000, channels=6),
    Encoding("ogg-vorbis", "ogg", "vorbis", rate=44_100, channels=2, options=(("strict", "experimental"),)),
    Encoding("ogg-opus", "ogg", "libopus", rate=48_000),
    Encoding("m4a-aac", "ipod", "aac", rate=44_100, channels=2),
    Encoding("m4a-alac", "ipod", "alac", rate=44_100),
    Encoding("webm-opus", "webm", "libopus", rate=48_000, channels=2),
    Encoding("aiff", "aiff", "pcm_s16be", rate=32_000),
    Encoding("caf-alac", "caf", "alac", rate=44_100, channels=2),
    Encoding("mp4-video", "mp4", "aac", rate=48_000, channels=2, video="mpeg4"),
    Encoding("mov-video", "mov", "aac", rate=44_100, video="mpeg4"),
    Encoding("mkv-video", "matroska", "libopus", rate=48_000, video="mpeg4"),
    Encoding("webm-video", "webm", "libopus", rate=48_000, video="libvpx"),
    Encoding("au-alaw", "au", "pcm_alaw", rate=8_000),
    Encoding("wav-ima-adpcm", "wav", "adpcm_ima_wav", rate=16_000, slack=0.13),
    Encoding("wav-ms-adpcm", "wav", "adpcm_ms", rate=22_050, channels=2, slack=0.05),
    Encoding("wav-g722", "wav", "g722", rate=16_000),
    Encoding("wav-g726", "wav", "adpcm_g726", rate=8_000, telephony=True),
    Encoding("amr-nb", "amr", "libopencore_amrnb", rate=8_000, slack=0.05, telephony=True),
    Encoding("wma", "asf", "wmav2", rate=44_100, channels=2, options=(("b", "64k"),), slack=0.05),
    Encoding("ac3-5.1", "ac3", "ac3", rate=48_000, channels=6, slack=0.05),
    Encoding("mpeg-ps", "mpeg", "mp2", rate=44_100, channels=2),
    Encoding("mpeg-ts-video", "mpegts", "aac", rate=48_000, channels=2, video="mpeg4", slack=0.05),
    Encoding("avi-video", "avi", "libmp3lame", rate=44_100, channels=2, video="mpeg4", slack=0.05),
    Encoding("mkv-eac3-video", "matroska", "eac3", rate=48_000, channels=2, video="mpeg4", slack=0.05),
)


def resample(audio: npt.NDArray[np.float32], rate: int, target: int) -> npt.NDArray[np.float32]:
    """Band-limited resampling (scipy's polyphase filter) of mono audio."""
    from math import gcd

    from scipy.signal import resample_poly

    if rate == target:
        return audio
    common = gcd(rate, target)
    resampled: npt.NDArray[np.float32] = resample_poly(audio, target // common, rate // common).astype(np.float32)
    return resampled


def encode(audio: npt.NDArray[np.float32], rate: int, encoding: Encoding) -> bytes:
    """`audio` (mono float32 at `rate`) written as `encoding` (every channel the same signal)."""
    samples = resample(audio, rate, encoding.rate)
    planar = np.repeat(samples[None, :], encoding.channels, axis=0)
    buffer = io.BytesIO()
    with av.open(buffer, mode="w", format=encoding.container) as container:
        stream = cast(
            "av.AudioStream", container.add_stream(encoding.codec, rate=encoding.rate, options=dict(encoding.options))
        )
        stream.layout = encoding.layout
        video = _video_stream(container, encoding.video) if encoding.video else None
        context = stream.codec_context
        resampler = av.AudioResampler(
            format=encoding.sample_format or (context.codec.audio_formats or [av.AudioFormat("fltp")])[0].name,
            layout=encoding.layout,
            rate=encoding.rate,
            frame_size=context.frame_size or 1024,
        )
        step = 4096
        for start in range(0, planar.shape[1], step):
            frame = av.AudioFrame.from_ndarray(
                np.ascontiguousarray(planar[:, start : start + step]), format="fltp", layout=encoding.layout
            )
            frame.sample_rate = encoding.rate
            frame.pts = start
            frame.time_base = Fraction(1, encoding.rate)
            for out in resampler.resample(frame):
                container.mux(stream.encode(out))
        for out in resampler.resample(None):
            container.mux(stream.encode(out))
        container.mux(stream.encode(None))
        if video is not None:
            _write_video(container, video, seconds=planar.shape[1] / encoding.rate)
    return buffer.getvalue()


def _video_stream(container: av.container.OutputContainer, codec: str) -> av.VideoStream:
    stream = cast("av.VideoStream", container.add_stream(codec, rate=10))
    stream.width, stream.height, stream.pix_fmt = 64, 48, "yuv420p"
    return stream


def _write_video(container: av.container.OutputContainer, stream: av.VideoStream, seconds: float) -> None:
    gray = np.full((48, 64, 3), 128, dtype=np.uint8)
    for index in range(int(seconds * 10) + 1):
        frame = av.VideoFrame.from_ndarray(gray, format="rgb24")
        frame.pts = index
        container.mux(stream.encode(frame))
    container.mux(stream.encode(None))


def cut_mp3(audio: npt.NDArray[np.float32], rate: int) -> bytes:
    """`audio` as an MP3 cut in the middle of a frame: its container checks out, decoding finds it truncated."""
    data = encode(audio, rate, next(e for e in ENCODINGS if e.name == "mp3-44k-stereo"))
    return data[: len(data) // 2]

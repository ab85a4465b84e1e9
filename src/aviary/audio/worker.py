"""A decoder process (`python -m aviary.audio.worker`): requests on stdin, chunks on stdout.

Started and spoken to by `aviary.audio.isolation`; see its docstring for the wire format. The
process limits its own address space first, so an input that makes FFmpeg allocate without bound
ends in a refused allocation here instead of the machine's memory running out.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import signal
import struct
import sys
from pathlib import Path
from typing import BinaryIO

from aviary.audio.isolation import HEADER, write_message
from aviary.audio.pyav import AudioLimits, MediaInfo, decode_chunks
from aviary.errors import AudioError, DecoderFailedError, DecoderMemoryError

MIB = 1 << 20


def _read(stream: BinaryIO, size: int) -> bytes:
    data = stream.read(size)
    if len(data) != size:
        raise EOFError
    return data


def _receive(stream: BinaryIO) -> tuple[bytes, bytes]:
    kind, size = HEADER.unpack(_read(stream, HEADER.size))
    return kind, _read(stream, size)


def _bytes(stream: BinaryIO) -> bytes | None:
    """The input sent in memory; None (with the rest read and dropped) when it does not fit our memory."""
    _, size = HEADER.unpack(_read(stream, HEADER.size))
    try:
        return _read(stream, size)
    except MemoryError:
        left = size
        while left:  # the parent is still writing: take the rest, so it hears our answer, not a broken pipe
            part = stream.read(min(left, 1 << 20))
            if not part:
                raise EOFError from None
            left -= len(part)
        return None


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer requests until stdin closes."""
    while True:
        try:
            _, payload = _receive(requests)
        except (EOFError, struct.error):
            return
        request = json.loads(payload)
        source: Path | bytes | None = Path(request["path"]) if request["path"] is not None else _bytes(requests)
        if source is None:
            _error(replies, DecoderMemoryError())
            replies.flush()
            continue
        try:
            for item in decode_chunks(source, AudioLimits(**request["limits"])):
                if isinstance(item, MediaInfo):
                    write_message(replies, b"I", json.dumps(item.__dict__).encode())
                    if request.get("probe"):  # what the container says is all that was asked
                        break
                else:
                    write_message(replies, b"C", item.tobytes())
                    replies.flush()
            write_message(replies, b"F", json.dumps({"peak_mb": _peak_mb()}).encode())
        except AudioError as exc:
            _error(replies, exc)
        except MemoryError:
            _error(replies, DecoderMemoryError())
        except Exception:  # noqa: BLE001 - whatever FFmpeg or PyAV raised, the input is what failed
            _error(replies, DecoderFailedError())
        replies.flush()
        del source


def _error(replies: BinaryIO, error: AudioError) -> None:
    reply = {"kind": type(error).__name__, "message": str(error), "peak_mb": _peak_mb()}
    write_message(replies, b"E", json.dumps(reply).encode())


def _peak_mb() -> float:
    """This process's peak resident memory since it started the worker (VmHWM: not the parent's, pre-exec)."""
    for line in Path("/proc/self/status").read_text(encoding="ascii").splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return 0.0


def main(argv: list[str] | None = None) -> int:
    """Limit memory, keep stdout for replies only, serve."""
    parser = argparse.ArgumentParser(prog="python -m aviary.audio.worker")
    parser.add_argument("--memory-mb", type=int, required=True)
    args = parser.parse_args(argv)
    limit = args.memory_mb * MIB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    import av  # noqa: F401 - loaded now, while the child waits, not on its first request

    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot corrupt the replies
    write_message(replies, b"S")  # started: PyAV is loaded, requests are welcome
    replies.flush()
    serve(sys.stdin.buffer, replies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

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


def serve(requests: BinaryIO, replies: BinaryIO) -> None:
    """Answer requests until stdin closes."""
    while True:
        try:
            _, payload = _receive(requests)
        except (EOFError, struct.error):
            return
        request = json.loads(payload)
        source: Path | bytes = Path(request["path"]) if request["path"] is not None else _receive(requests)[1]
        try:
            for item in decode_chunks(source, AudioLimits(**request["limits"])):
                if isinstance(item, MediaInfo):
                    write_message(replies, b"I", json.dumps(item.__dict__).encode())
                else:
                    write_message(replies, b"C", item.tobytes())
                    replies.flush()
            write_message(replies, b"F")
        except AudioError as exc:
            _error(replies, exc)
        except MemoryError:
            _error(replies, DecoderMemoryError())
        except Exception:  # noqa: BLE001 - whatever FFmpeg or PyAV raised, the input is what failed
            _error(replies, DecoderFailedError())
        replies.flush()
        del source


def _error(replies: BinaryIO, error: AudioError) -> None:
    write_message(replies, b"E", json.dumps({"kind": type(error).__name__, "message": str(error)}).encode())


def main(argv: list[str] | None = None) -> int:
    """Limit memory, keep stdout for replies only, serve."""
    parser = argparse.ArgumentParser(prog="python -m aviary.audio.worker")
    parser.add_argument("--memory-mb", type=int, required=True)
    args = parser.parse_args(argv)
    limit = args.memory_mb * MIB
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    replies = os.fdopen(os.dup(sys.stdout.fileno()), "wb")
    os.dup2(sys.stderr.fileno(), sys.stdout.fileno())  # a stray print cannot corrupt the replies
    serve(sys.stdin.buffer, replies)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

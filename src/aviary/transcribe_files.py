"""`aviary transcribe FILE...`: decode each file, transcribe it, write it in the chosen format.

Each file takes the server's path: streamed from the decoder, cut at pauses into chunks, batched,
merged (`aviary.engine.longform`), so a file of hours runs in bounded memory.

A file that fails (unreadable, not audio, ...) prints one line naming it and its error code; the
other files are still processed, and the exit status says whether any failed.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Self, TextIO, cast

from aviary.engine.longform import transcribe_source
from aviary.engine.registry import Registry
from aviary.errors import AviaryError
from aviary.formats import parse_format, render
from aviary.types import TranscribeOptions, language_code

if TYPE_CHECKING:
    import argparse
    from collections.abc import Iterable, Iterator

    from aviary.audio import IsolatedDecoder, MediaInfo
    from aviary.config import Settings
    from aviary.engine.batcher import Batcher

STDIN = "-"
"""The file name that means standard input (read whole, up to the upload cap, then decoded)."""
EXTENSIONS = {"text": "txt", "json": "json", "verbose_json": "json", "srt": "srt", "vtt": "vtt"}


def transcribe_files(args: argparse.Namespace, settings: Settings) -> int:
    """Transcribe `args.files` with `settings.model`; return 0, or 1 when any file failed."""
    options = TranscribeOptions(
        language=language_code(args.language) if args.language else None,
        task=args.task,
        target_language=language_code(args.target_language) if args.target_language else None,
        pnc=not args.no_pnc,
    )
    registry = Registry(settings)
    decoder = settings.audio_decoder()
    try:
        with _results_stdout() as stdout:
            engine = registry.get(settings.model)
            engine.info.check(options)
            out_dir = Path(args.output_dir) if args.output_dir else None
            if out_dir is not None:
                out_dir.mkdir(parents=True, exist_ok=True)
            failed = 0
            paths = [Path(f) for f in args.files]
            names = dict(zip(paths, output_names(paths), strict=True)) if out_dir is not None else {}
            for path in _progress(paths, sys.stderr):
                try:
                    text = _one(registry.batcher(engine), decoder, path, options, args.format, settings, sys.stderr)
                except (AviaryError, OSError) as exc:
                    code = exc.code if isinstance(exc, AviaryError) else "unreadable_file"
                    reason = exc if isinstance(exc, AviaryError) else (exc.strerror or type(exc).__name__)
                    sys.stderr.write(f"aviary: {path}: [{code}] {reason}\n")
                    failed += 1
                    continue
                _write(text, path, names.get(path), out_dir, stdout, args.format, several=len(args.files) > 1)
    finally:
        decoder.close()
        registry.close()
    return 1 if failed else 0


@contextlib.contextmanager
def _results_stdout() -> Iterator[TextIO]:
    """Standard output for the transcripts alone.

    While it is held, whatever else writes to standard output goes to standard error: NeMo's info
    log (its handler holds `sys.stdout` from the moment NeMo is imported), `print`s, and C libraries
    writing to descriptor 1. So `aviary transcribe --format json x.wav | jq` reads only JSON.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        with os.fdopen(os.dup(saved), "w", encoding="utf-8") as results:
            yield results
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _one(  # noqa: PLR0917  (one call site, every argument needed)
    batcher: Batcher,
    decoder: IsolatedDecoder,
    path: Path,
    options: TranscribeOptions,
    fmt: str,
    settings: Settings,
    stream: TextIO,
) -> str:
    source: Path | BinaryIO
    if str(path) == STDIN:
        source = sys.stdin.buffer
    else:
        with path.open("rb"):  # unreadable files fail here, with the OS's reason, not in the decoder process
            pass
        source = path.resolve()
    chunking = settings.chunking(timestamps=batcher.engine.info.timestamps)
    with _AudioProgress(_stem(path) if source is sys.stdin.buffer else path.name, stream) as progress:
        transcript = transcribe_source(
            decoder, batcher, source, options, chunking, on_info=progress.info, on_progress=progress.update
        )
    return render(transcript, parse_format(fmt), task=options.task, granularities=("word", "segment"))


class _AudioProgress:
    """Seconds of one file transcribed so far, as a bar on `stream` when it is a terminal.

    Against the length the container declares, when it declares one; nothing when not a terminal.
    """

    def __init__(self, name: str, stream: TextIO) -> None:
        self._name, self._stream = name, stream
        self._bar: Any = None

    def __enter__(self) -> Self:
        if self._stream.isatty():
            from tqdm import tqdm

            self._bar = tqdm(desc=self._name, file=self._stream, unit="s", leave=False)
        return self

    def info(self, info: MediaInfo) -> None:
        if self._bar is not None and info.declared_seconds:
            self._bar.total = math.ceil(info.declared_seconds)
            self._bar.refresh()

    def update(self, seconds: float) -> None:
        if self._bar is not None:
            self._bar.update(int(seconds) - self._bar.n)

    def __exit__(self, *exc: object) -> None:
        if self._bar is not None:
            self._bar.close()


def _write(  # noqa: PLR0917  (one call site)
    text: str, path: Path, name: str | None, out_dir: Path | None, stdout: TextIO, fmt: str, *, several: bool
) -> None:
    body = text if text.endswith("\n") else text + "\n"
    if out_dir is not None:
        (out_dir / f"{name or _stem(path)}.{EXTENSIONS[fmt]}").write_text(body, encoding="utf-8")
        return
    if several:
        stdout.write(f"==> {path} <==\n")
    stdout.write(body)
    stdout.flush()


def output_names(paths: list[Path]) -> list[str]:
    """Each input's output file name in `--output-dir`, without the format's extension; never two alike.

    A file's stem (`talk` for `a/talk.mp3`); its whole name (`talk.mp3`) when another input has the
    same stem; and a number after the stem (`talk-2.mp3`) for the second and later of equal names.
    """
    stems = [_stem(p) for p in paths]
    names = [p.name if stems.count(s) > 1 and str(p) != STDIN else s for p, s in zip(paths, stems, strict=True)]
    out: list[str] = []
    for name in names:
        stem, dot, suffix = name.partition(".")
        candidate, number = name, 1
        while candidate in out or (number > 1 and candidate in names):  # nor another input's own name
            number += 1
            candidate = f"{stem}-{number}{dot}{suffix}"
        out.append(candidate)
    return out


def _stem(path: Path) -> str:
    """The name of `path`'s output file, without its extension (`stdin` for `-`)."""
    return "stdin" if str(path) == STDIN else path.stem


def _progress(paths: list[Path], stream: TextIO) -> Iterable[Path]:
    """`paths`, wrapped in a progress bar on stderr when it is a terminal and there is more than one file."""
    if len(paths) < 2 or not stream.isatty():  # noqa: PLR2004
        return paths
    from tqdm import tqdm

    return cast("Iterable[Path]", tqdm(paths, file=stream, unit="file"))

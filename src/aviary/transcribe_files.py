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
import stat
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, Self, TextIO, cast

from aviary.engine.longform import transcribe_source
from aviary.engine.registry import Registry
from aviary.errors import AviaryError, OutputError
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
    """Transcribe `args.files` with `settings.model`; return 0, or 1 when any file failed.

    Raises:
        AviaryError: the model or the options cannot be used, or the output directory cannot be made;
            before any model is downloaded or loaded where that can be known then.
    """
    options = TranscribeOptions(
        language=language_code(args.language) if args.language else None,
        task=args.task,
        target_language=language_code(args.target_language) if args.target_language else None,
        pnc=not args.no_pnc,
    )
    registry = Registry(settings)
    source = registry.resolve(settings.model)
    if source.known is not None:
        source.known.check(options)
    out_dir = output_dir(Path(args.output_dir)) if args.output_dir else None
    paths = [Path(f) for f in args.files]
    names = output_names(paths) if out_dir is not None else [None] * len(paths)
    decoder = settings.audio_decoder()
    failed = 0
    try:
        with _results_stdout() as stdout:
            engine = registry.get(settings.model)
            engine.info.check(options)
            for path, name in _progress(list(zip(paths, names, strict=True)), sys.stderr):
                try:
                    text = _one(registry.batcher(engine), decoder, path, options, args.format, settings, sys.stderr)
                    if out_dir is not None:
                        _save(text, out_dir / f"{name}.{EXTENSIONS[args.format]}")
                except (AviaryError, OSError) as exc:
                    sys.stderr.write(f"aviary: {shown(path)}: [{_code(exc)}] {_reason(exc)}\n")
                    failed += 1
                    continue
                if out_dir is None:
                    _print(text, path, stdout, several=len(paths) > 1)
    finally:
        decoder.close()
        registry.close()
    return 1 if failed else 0


def output_dir(path: Path) -> Path:
    """`path`, made if missing, once it is known to be a directory this process can write files in.

    Raises:
        OutputError: it cannot be made, or is not a writable directory.
    """
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(shown(path), exc.strerror or type(exc).__name__) from exc
    if not os.access(path, os.W_OK | os.X_OK):
        raise OutputError(shown(path), "permission denied")
    return path


def _save(text: str, target: Path) -> None:
    try:
        target.write_text(text if text.endswith("\n") else text + "\n", encoding="utf-8")
    except OSError as exc:
        raise OutputError(shown(target), exc.strerror or type(exc).__name__) from exc


def _code(exc: Exception) -> str:
    return exc.code if isinstance(exc, AviaryError) else "unreadable_file"


def _reason(exc: Exception) -> str:
    return str(exc) if isinstance(exc, AviaryError) else (getattr(exc, "strerror", None) or type(exc).__name__)


def shown(path: Path | str) -> str:
    """`path` for a one-line message, its unprintable characters (a newline, bytes not UTF-8) escaped."""
    return "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(path))


@contextlib.contextmanager
def _results_stdout() -> Iterator[TextIO]:
    """Standard output for the transcripts alone.

    While it is held, whatever else writes to standard output goes to standard error: NeMo's info
    log (its handler holds `sys.stdout` from the moment NeMo is imported), `print`s, and C libraries
    writing to descriptor 1. So `aviary transcribe --format json x.wav | jq` reads only JSON.
    File names that are not UTF-8 are written back as the bytes they were. When the reader goes
    away (`| head -1`), `BrokenPipeError` is raised and what is left unwritten is dropped.
    """
    sys.stdout.flush()
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        results = os.fdopen(os.dup(saved), "w", encoding="utf-8", errors="surrogateescape")
        try:
            yield results
        except BrokenPipeError:
            _discard(results)
            raise
        finally:
            try:
                results.close()
            except BrokenPipeError:
                _discard(results)
                results.close()
    finally:
        sys.stdout.flush()
        os.dup2(saved, 1)
        os.close(saved)


def _discard(stream: TextIO) -> None:
    """Point `stream`'s descriptor at /dev/null, so that flushing what it still holds cannot fail."""
    null = os.open(os.devnull, os.O_WRONLY)
    os.dup2(null, stream.fileno())
    os.close(null)


def _one(  # noqa: PLR0917  (one call site, every argument needed)
    batcher: Batcher,
    decoder: IsolatedDecoder,
    path: Path,
    options: TranscribeOptions,
    fmt: str,
    settings: Settings,
    stream: TextIO,
) -> str:
    with _opened(path) as source:
        chunking = settings.chunking(batcher.engine.info)
        with _AudioProgress(_stem(path) if str(path) == STDIN else shown(path.name), stream) as progress:
            transcript = transcribe_source(
                decoder, batcher, source, options, chunking, on_info=progress.info, on_progress=progress.update
            )
    return render(transcript, parse_format(fmt), task=options.task, granularities=("word", "segment"))


@contextlib.contextmanager
def _opened(path: Path) -> Iterator[Path | BinaryIO]:
    """What the decoder reads for `path`: a regular file by its path, anything else as a stream.

    Standard input (`-`), pipes, FIFOs and process substitutions (`<(...)`, `/dev/fd/N`) can be read
    once only, and only by this process, so they are read here and streamed to the decoder.
    Unreadable files fail here, with the system's reason, rather than in the decoder process.
    """
    if str(path) == STDIN:
        yield sys.stdin.buffer
        return
    with path.open("rb") as handle:
        yield path.resolve() if stat.S_ISREG(os.fstat(handle.fileno()).st_mode) else handle


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


def _print(text: str, path: Path, stdout: TextIO, *, several: bool) -> None:
    if several:
        stdout.write(f"==> {path} <==\n")
    stdout.write(text if text.endswith("\n") else text + "\n")
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


def _progress(files: list[tuple[Path, str | None]], stream: TextIO) -> Iterable[tuple[Path, str | None]]:
    """`files`, wrapped in a progress bar on stderr when it is a terminal and there is more than one file."""
    if len(files) < 2 or not stream.isatty():  # noqa: PLR2004
        return files
    from tqdm import tqdm

    return cast("Iterable[tuple[Path, str | None]]", tqdm(files, file=stream, unit="file"))

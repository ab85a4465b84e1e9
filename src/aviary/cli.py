"""The `aviary` command line: `transcribe`, `models list|pull`, `serve`, and `worker`.

Settings come from `AVIARY_*` environment variables, overridden by the flags given; they are read
in `main()`, never at import time. Errors print one line with a stable code and exit non-zero.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from typing import TYPE_CHECKING, Any

from aviary import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence

    from aviary.config import Settings

# The output formats of `aviary.formats` (kept literal here so `--help` needs no imports).
FORMAT_NAMES = ("text", "json", "verbose_json", "srt", "vtt")
SETTINGS_FLAGS = frozenset(
    {"model", "engine", "device", "threads", "quantization", "offline", "host", "port", "executor_id"}
)
"""The flags that override a setting of the same name."""
_SECRET = re.compile(r"key|secret|password|database", re.IGNORECASE)
"""Settings whose values an error message never repeats."""
STARTUP_FAILURE = 3
"""Exit status of `aviary serve` when the server could not start (its port taken, its app failing), as uvicorn."""


def _add_model_flags(parser: argparse.ArgumentParser) -> None:
    """The flags of commands that run a model."""
    parser.add_argument("--model", help="registry name, alias, hub repository, ONNX directory or .nemo file")
    _add_files_flags(parser)
    parser.add_argument("--device", choices=("auto", "cpu", "cuda"), help="where to run (default: auto)")
    parser.add_argument("--threads", type=int, help="CPU threads per inference (default: all cores)")


def _add_files_flags(parser: argparse.ArgumentParser) -> None:
    """The flags that decide which of a model's files are used (and fetched)."""
    parser.add_argument(
        "--engine",
        choices=("onnx", "nemo"),
        help="engine for registry names, and for a directory that also holds a .nemo file (default: onnx)",
    )
    parser.add_argument("--quantization", help="use *.<quantization>.onnx files, e.g. int8")
    parser.add_argument("--offline", action="store_true", default=None, help="never download models")


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `aviary`."""
    parser = argparse.ArgumentParser(prog="aviary", description="Self-hosted speech-to-text for Parakeet and Canary.")
    parser.add_argument("--version", action="version", version=f"aviary {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    serve = commands.add_parser("serve", help="run the HTTP server")
    serve.add_argument("--host", help="address to listen on (default: AVIARY_HOST or 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port to listen on (default: AVIARY_PORT, PORT or 8000)")
    _add_model_flags(serve)

    worker = commands.add_parser("worker", help="run queued jobs only (with PostgreSQL: beside other workers)")
    worker.add_argument(
        "--executor-id", help="this worker's stable name (default: AVIARY_EXECUTOR_ID or the host name)"
    )
    _add_model_flags(worker)

    transcribe = commands.add_parser("transcribe", help="transcribe or translate audio files")
    transcribe.add_argument("files", nargs="+", metavar="FILE", help="audio or video files; - reads standard input")
    _add_model_flags(transcribe)
    transcribe.add_argument("--language", help="spoken language, ISO 639-1 (Canary: default en)")
    transcribe.add_argument(
        "--task",
        choices=("transcribe", "translate"),
        default="transcribe",
        help="write the speech down, or translate it (Canary; default: transcribe)",
    )
    transcribe.add_argument("--target-language", help="output language of --task translate (default: en)")
    transcribe.add_argument("--no-pnc", action="store_true", help="no punctuation and capitals (Canary)")
    transcribe.add_argument("--format", choices=FORMAT_NAMES, default="text", help="output format (default: text)")
    transcribe.add_argument(
        "--output-dir",
        help="write DIR/<stem>.<ext> per file instead of printing (<name>.<ext> where inputs share a stem)",
    )

    models = commands.add_parser("models", help="list or download models")
    model_commands = models.add_subparsers(dest="models_command", metavar="ACTION", required=True)
    listing = model_commands.add_parser("list", help="known models and whether they are cached")
    _add_files_flags(listing)
    pull = model_commands.add_parser("pull", help="download a model into the Hugging Face cache")
    pull.add_argument("name", help="registry name, alias or hub repository")
    _add_files_flags(pull)
    return parser


def settings_from(args: argparse.Namespace) -> Settings:
    """Settings from the environment, overridden by the flags that were given."""
    from aviary.config import Settings

    overrides: dict[str, Any] = {k: v for k, v in vars(args).items() if k in SETTINGS_FLAGS and v is not None}
    return Settings(**overrides)


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    if args.command == "transcribe" and args.target_language and args.task != "translate":
        parser.error("--target-language is the language of a translation: give it with --task translate")
    from aviary.errors import AviaryError

    try:
        settings = _settings(args)
        return _run(args, settings) if settings is not None else 1
    except AviaryError as exc:
        sys.stderr.write(f"aviary: error: [{exc.code}] {exc}\n")
    except BrokenPipeError:  # the reader of our output went away (`| head`): nothing left to say
        pass
    except KeyboardInterrupt:
        sys.stderr.write("aviary: interrupted\n")
        return 130
    return 1


def _settings(args: argparse.Namespace) -> Settings | None:
    """The settings, or None after saying on one line which ones are invalid."""
    from pydantic import ValidationError
    from pydantic_settings import SettingsError

    try:
        return settings_from(args)
    except (ValidationError, SettingsError) as exc:
        sys.stderr.write(f"aviary: error: [invalid_option] {settings_problem(exc)}\n")
        return None


def _run(args: argparse.Namespace, settings: Settings) -> int:
    if args.command == "serve":
        return _serve(settings)
    if args.command == "worker":
        from aviary.jobs.worker import run_worker

        return run_worker(settings)
    if args.command == "transcribe":
        from aviary.transcribe_files import transcribe_files

        return transcribe_files(args, settings)
    return _models(args, settings)


def settings_problem(exc: Exception) -> str:
    """One line saying which settings are invalid and why, naming the variable (and flag) that sets each."""
    from pydantic import ValidationError

    if not isinstance(exc, ValidationError):  # pydantic-settings could not parse a variable's JSON
        named = re.search(r'field "(\w+)"', str(exc))
        variable = f"AVIARY_{named[1].upper()}" if named else "a variable"
        cause = f" ({exc.__cause__})" if exc.__cause__ else ""
        return f"invalid settings: {variable} is not valid JSON{cause}"
    problems = []
    for error in exc.errors():
        field = str(error["loc"][0]) if error["loc"] else ""
        name = field.upper() if field.upper().startswith("AVIARY_") or not field else f"AVIARY_{field.upper()}"
        flag = f" or --{field.replace('_', '-')}" if field in SETTINGS_FLAGS else ""
        shown = "input" in error and not isinstance(error["input"], dict) and not _SECRET.search(field)
        value = f" {error['input']!r}" if shown else ""
        problems.append(f"{name}{flag}{value}: {error['msg']}")
    return "invalid settings: " + "; ".join(problems)


def _models(args: argparse.Namespace, settings: Settings) -> int:
    from aviary.engine.registry import KNOWN, Registry

    registry = Registry(settings)
    if args.models_command == "pull":
        source = registry.resolve(args.name)
        path = registry.fetch(source)  # downloads unless offline (--offline, AVIARY_OFFLINE or HF_HUB_OFFLINE)
        sys.stdout.write(f"{source.name}: {path}\n")
        return 0
    rows = [("NAME", "ENGINE", "CACHED", "DESCRIPTION")]
    for name, model in KNOWN.items():
        source = registry.resolve(name)
        rows.append((name, source.engine, "yes" if registry.is_cached(source) else "no", model.description))
    rows.extend((alias, "", "", f"alias of {target}") for alias, target in settings.aliases.items())
    widths = [max(len(row[i]) for row in rows) for i in range(3)]
    for row in rows:
        sys.stdout.write("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths, strict=True)))
        sys.stdout.write(f"  {row[3]}\n")
    return 0


def _serve(settings: Settings) -> int:
    """Run the API with uvicorn until interrupted; 3 (uvicorn's startup failure) when it could not start.

    The port is bound before the application starts, so a port in use is reported at once (uvicorn's
    own message, exit status 3), not after the model has been loaded or downloaded. Then the jobs
    database is waited for as the app will (`DatabaseUnavailableError`: one line, exit status 1).
    """
    import uvicorn

    from aviary.api import create_app
    from aviary.jobs import open_store

    config = uvicorn.Config(
        create_app(settings), host=settings.host, port=settings.port, root_path=settings.root_path, log_level="info"
    )
    server = uvicorn.Server(config)
    listening = config.bind_socket()  # exits with uvicorn's message and status 3 when it cannot bind
    try:
        open_store(settings).close()
    except BaseException:
        listening.close()
        raise
    with contextlib.suppress(KeyboardInterrupt):  # uvicorn shut the app down on Ctrl-C, then re-raised it
        server.run(sockets=[listening])
    return 0 if server.started else STARTUP_FAILURE

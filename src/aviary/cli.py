"""The `aviary` command line.

Only `--version` and a placeholder `serve` exist so far; the server, `transcribe`, `worker` and
`models` commands arrive with their issues (#3, #5, #6).
"""

from __future__ import annotations

import argparse
import sys
from typing import TYPE_CHECKING

from aviary import __version__

if TYPE_CHECKING:
    from collections.abc import Sequence


def build_parser() -> argparse.ArgumentParser:
    """The argument parser for `aviary`."""
    parser = argparse.ArgumentParser(prog="aviary", description="Self-hosted speech-to-text for Parakeet and Canary.")
    parser.add_argument("--version", action="version", version=f"aviary {__version__}")
    commands = parser.add_subparsers(dest="command", metavar="COMMAND")
    commands.add_parser("serve", help="run the HTTP server (placeholder: prints the version; see issue #5)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the command line and return the process exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 0
    # TODO(#5): `serve` starts uvicorn with the API; until then it only says what it is.
    sys.stdout.write(f"aviary {__version__}: the HTTP server is not built yet (issue #5)\n")
    return 0

"""The ``spinenode`` command line.

Each command lives in its own module of this package and exposes ``NAME``, ``HELP``,
``add_arguments(parser)`` and ``run(args) -> int``. Only built commands are listed in
:data:`COMMANDS`; this module is the only place that configures logging.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys
from collections.abc import Sequence
from types import ModuleType

# Module names under node.cli, in the order `spinenode --help` lists them.
COMMANDS: tuple[str, ...] = (
    "inspect",
    "serve",
    "jobs",
    "job",
    "status",
    "retry",
    "phantom",
    "analyze",
)


def _load_commands() -> list[ModuleType]:
    return [importlib.import_module(f"node.cli.{name}") for name in COMMANDS]


def build_parser() -> argparse.ArgumentParser:
    from node import __version__

    parser = argparse.ArgumentParser(
        prog="spinenode",
        description="DICOM node for lumbosacral pedicle screw planning and C2 screw feasibility.",
    )
    parser.add_argument("--version", action="version", version=f"spinenode {__version__}")
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv for debug)"
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for module in _load_commands():
        command = sub.add_parser(module.NAME, help=module.HELP, description=module.HELP)
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def configure_logging(verbosity: int) -> None:
    level = logging.WARNING if verbosity == 0 else logging.INFO if verbosity == 1 else logging.DEBUG
    logging.basicConfig(
        level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    configure_logging(args.verbose)
    try:
        result: int = args._run(args)
        # Written here, not at exit: into a pipe, stdout is buffered and a listing this size is
        # only written by the flush at exit, where a closed pipe cannot be caught any more
        # (status 120, "Exception ignored ... BrokenPipeError").
        sys.stdout.flush()
    except BrokenPipeError:
        # `spinenode jobs | head`: the reader left. Point stdout at /dev/null so that the flush
        # at exit does not fail again, and stop without a traceback.
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 1
    return result

"""``spinenode serve``: run the DICOM node (SCP, scheduler, workers, outbox) until stopped."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from node.settings import Settings, SettingsError

NAME = "serve"
HELP = "run the DICOM node: receive CT, analyse complete series, send the results back"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "-c",
        "--config",
        type=Path,
        default=None,
        help="settings file (TOML); default $SPINENODE_CONFIG, else built-in defaults",
    )


def run(args: argparse.Namespace) -> int:
    try:
        settings = Settings.load(args.config, os.environ)
    except SettingsError as exc:
        print(f"spinenode serve: invalid settings: {exc}", file=sys.stderr)
        return 2
    from node.service import serve
    from node.worker import analyzer_problem

    problem = analyzer_problem(settings.analyzer)
    if problem is not None:
        print(f"spinenode serve: {problem}", file=sys.stderr)
        return 2
    return serve(settings, verbosity=args.verbose)

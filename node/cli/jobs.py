"""``spinenode jobs``: list jobs from the job log, newest first, as a table or JSON.

Also holds what the admin commands (``jobs``, ``job``, ``status``, ``retry``) share: how they find
the job log (``--config`` / ``--db``), how they parse times, and how they print tables. Times are
shown and read in UTC. No patient identifiers exist in the job log, so none can be printed.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from node.settings import Settings, SettingsError
from storage.errors import StorageError
from storage.joblog import JobLog
from storage.records import JobSummary
from storage.states import JobState

NAME = "jobs"
HELP = "list jobs (newest first) with their state, sender, instance count and reason"

_RELATIVE = re.compile(r"(\d+(?:\.\d+)?)([smhd])")
_UNIT_SECONDS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def add_joblog_arguments(parser: argparse.ArgumentParser) -> None:
    """``--config`` and ``--db``, shared by the admin commands."""
    parser.add_argument(
        "--config",
        type=Path,
        default=None,
        help="the node's settings file (default: $SPINENODE_CONFIG, else built-in defaults)",
    )
    parser.add_argument(
        "--db", metavar="URL", default=None, help="job log SQLAlchemy URL (overrides the settings)"
    )
    parser.add_argument("--json", action="store_true", help="print JSON instead of a table")


def load_settings(args: argparse.Namespace) -> Settings:
    return Settings.load(args.config, os.environ)


def open_joblog(args: argparse.Namespace) -> JobLog:
    """The job log named by ``--db`` or the settings; never creates an empty one."""
    url = args.db if args.db else load_settings(args).database_url
    return JobLog.open(url, create=False)


def fail(message: str, code: int = 1) -> int:
    print(f"spinenode {message}", file=sys.stderr)
    return code


def parse_when(text: str, now: datetime | None = None) -> datetime:
    """``2026-11-21``, ``2026-11-21T08:30`` (UTC unless offset given), or ``2h``, ``3d`` ago."""
    match = _RELATIVE.fullmatch(text.strip())
    if match:
        seconds = float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        return (now or datetime.now(UTC)) - timedelta(seconds=seconds)
    try:
        when = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a date: use 2026-11-21, 2026-11-21T08:30 or an age like 2h, 3d"
        ) from exc
    return when.replace(tzinfo=UTC) if when.tzinfo is None else when.astimezone(UTC)


def when_text(when: datetime | None) -> str:
    """A UTC time as ``2026-11-21 08:30:05``; ``-`` for none."""
    return "-" if when is None else when.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Rows aligned in columns under ``header`` (the last column is not padded)."""
    cells = [[str(h) for h in header]] + [["-" if c is None else str(c) for c in r] for r in rows]
    widths = [max(len(row[i]) for row in cells) for i in range(len(header) - 1)]
    lines = []
    for row in cells:
        padded = [cell.ljust(width) for cell, width in zip(row, widths, strict=False)]
        lines.append("  ".join([*padded, row[-1]]).rstrip())
    return "\n".join(lines)


def print_json(doc: Any) -> None:
    print(json.dumps(doc, indent=2, sort_keys=False))


def summary_rows(jobs: Sequence[JobSummary]) -> list[list[object]]:
    return [
        [
            j.job_id,
            j.state.value,
            j.attempts,
            f"{j.instances} (deleted)" if j.spool_purged else j.instances,
            j.calling_ae,
            j.modality,
            when_text(j.created_at),
            when_text(j.updated_at),
            j.series_uid,
            j.reason or "",
        ]
        for j in jobs
    ]


SUMMARY_HEADER = (
    "ID",
    "STATE",
    "TRIES",
    "IMAGES",
    "FROM AE",
    "MOD",
    "CREATED (UTC)",
    "UPDATED (UTC)",
    "SERIES UID",
    "REASON",
)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--state", choices=[s.value for s in JobState], default=None, help="only jobs in this state"
    )
    parser.add_argument(
        "--since", type=parse_when, default=None, help="created at or after (UTC date, or 2h, 3d)"
    )
    parser.add_argument("--until", type=parse_when, default=None, help="created before (UTC)")
    parser.add_argument("--limit", type=int, default=100, help="at most this many (default 100)")
    add_joblog_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        with open_joblog(args) as log:
            state = JobState(args.state) if args.state else None
            found = log.jobs(state=state, since=args.since, until=args.until, limit=args.limit)
    except (SettingsError, StorageError) as exc:
        return fail(f"jobs: {exc}", 2)
    if args.json:
        print_json([j.to_json() for j in found])
    elif not found:
        print("no jobs")
    else:
        print(table(SUMMARY_HEADER, summary_rows(found)))
    return 0

"""``spinenode status``: queue depth, deliveries, live workers, spool free space, failures."""

from __future__ import annotations

import argparse
from datetime import UTC, datetime
from pathlib import Path

from node.cli.jobs import (
    SUMMARY_HEADER,
    add_joblog_arguments,
    fail,
    load_settings,
    open_joblog,
    print_json,
    summary_rows,
    table,
    when_text,
)
from node.settings import SettingsError
from storage.errors import StorageError
from storage.records import StatusSummary
from storage.spool import Spool

NAME = "status"
HELP = "show queue depth per state, deliveries, live workers, spool free space, recent failures"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--spool", type=Path, default=None, help="spool folder (default: from the settings)"
    )
    parser.add_argument(
        "--live-within",
        type=float,
        default=300.0,
        metavar="SECONDS",
        help="a worker seen within this many seconds counts as live (default 300)",
    )
    add_joblog_arguments(parser)


def render(status: StatusSummary, spool: Path, free: int | None) -> str:
    depth = "  ".join(f"{state} {n}" for state, n in status.jobs_by_state.items())
    sent = "  ".join(f"{state} {n}" for state, n in status.deliveries_by_state.items())
    lines = [
        f"status at {when_text(status.now)} UTC",
        f"jobs:        {depth}",
        f"deliveries:  {sent}",
        f"spool:       {spool}: "
        + ("not readable" if free is None else f"{free / 1024**3:.1f} GiB free"),
        "",
    ]
    if status.workers:
        rows = [
            [w.worker, when_text(w.last_seen), w.job_id, when_text(w.lease_until)]
            for w in status.workers
        ]
        lines.append(f"live workers ({len(rows)}):")
        lines.append(table(("WORKER", "LAST SEEN (UTC)", "JOB", "LEASE UNTIL"), rows))
    else:
        lines.append("live workers: none")
    lines.append("")
    if status.recent_failures:
        lines.append("recent failures:")
        lines.append(table(SUMMARY_HEADER, summary_rows(status.recent_failures)))
    else:
        lines.append("recent failures: none")
    return "\n".join(lines)


def run(args: argparse.Namespace) -> int:
    try:
        spool = args.spool if args.spool is not None else load_settings(args).spool_dir
        with open_joblog(args) as log:
            status = log.status(datetime.now(UTC), live_within_s=args.live_within)
    except (SettingsError, StorageError) as exc:
        return fail(f"status: {exc}", 2)
    try:
        free: int | None = Spool(spool).free_bytes()
    except OSError:
        free = None
    if args.json:
        print_json(status.to_json() | {"spool": str(spool), "spool_free_bytes": free})
    else:
        print(render(status, spool, free))
    return 0

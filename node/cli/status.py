"""``spinenode status``: queue depth, deliveries, live workers, spool free space, retention,
failures."""

from __future__ import annotations

import argparse
from dataclasses import asdict
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
from node.retention import Retention, RetentionPreview
from node.settings import RetentionSettings, SettingsError
from storage.errors import StorageError
from storage.records import StatusSummary
from storage.spool import Spool

NAME = "status"
HELP = (
    "show queue depth per state, deliveries, live workers, spool free space, what retention "
    "would free, recent failures"
)


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


def _retention_line(preview: RetentionPreview, rules: RetentionSettings) -> str:
    kept = ", ".join(
        f"{name} {'forever' if not days else f'{days:g} d'}"
        for name, days in (("spool", rules.spool_days), ("outputs", rules.outputs_days))
    )
    line = (
        f"retention:   {kept}; the next pass would free {preview.instances} instances "
        f"({preview.spool_bytes / 1e6:.1f} MB) and {preview.work_folders} work folders; "
    )
    last = preview.last_sweep
    if last is None:
        return line + "no pass yet"
    return line + (
        f"last pass {str(last.get('at', '?'))[:16].replace('T', ' ')} UTC deleted "
        f"{last.get('instances', 0)} instances of {last.get('series', 0)} series, "
        f"{last.get('work_folders', 0)} work folders, {last.get('jobs_forgotten', 0)} jobs' rows"
    )


def render(
    status: StatusSummary,
    spool: Path,
    free: int | None,
    retention: tuple[RetentionPreview, RetentionSettings] | None = None,
    job_log: tuple[str, int | None] | None = None,
) -> str:
    depth = "  ".join(f"{state} {n}" for state, n in status.jobs_by_state.items())
    sent = "  ".join(f"{state} {n}" for state, n in status.deliveries_by_state.items())
    lines = [
        f"status at {when_text(status.now)} UTC",
        f"jobs:        {depth}",
        f"deliveries:  {sent}",
        f"spool:       {spool}: "
        + ("not readable" if free is None else f"{free / 1024**3:.1f} GiB free"),
        *([_retention_line(*retention)] if retention is not None else []),
        *([f"job log:     {job_log[0]} (schema {job_log[1]})"] if job_log is not None else []),
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
        settings = load_settings(args)
        spool = args.spool if args.spool is not None else settings.spool_dir
        with open_joblog(args) as log:
            now = datetime.now(UTC)
            status = log.status(now, live_within_s=args.live_within)
            preview = Retention(log, settings).preview(now)
            job_log = (log.location, log.schema_version())
    except (SettingsError, StorageError) as exc:
        return fail(f"status: {exc}", 2)
    try:
        free: int | None = Spool(spool).free_bytes()
    except OSError:
        free = None
    if args.json:
        extra = {"spool": str(spool), "spool_free_bytes": free, "retention": asdict(preview)}
        extra["job_log"] = {"url": job_log[0], "schema_version": job_log[1]}
        print_json(status.to_json() | extra)
    else:
        print(render(status, spool, free, (preview, settings.retention), job_log))
    return 0

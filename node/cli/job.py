"""``spinenode job ID``: one job's timeline, stage timings, outputs and deliveries."""

from __future__ import annotations

import argparse

from node.cli.jobs import (
    add_joblog_arguments,
    fail,
    open_joblog,
    print_json,
    table,
    when_text,
)
from node.settings import SettingsError
from storage.errors import JobNotFoundError, StorageError
from storage.records import JobDetail

#: Short names of the SOP classes a job writes (anything else is shown by its UID).
SOP_CLASS_NAMES = {
    "1.2.840.10008.5.1.4.1.1.66.4": "SEG",
    "1.2.840.10008.5.1.4.1.1.88.33": "SR (comprehensive)",
    "1.2.840.10008.5.1.4.1.1.88.34": "SR (comprehensive 3D)",
    "1.2.840.10008.5.1.4.1.1.88.22": "SR (enhanced)",
    "1.2.840.10008.5.1.4.1.1.7": "SC",
    "1.2.840.10008.5.1.4.1.1.7.4": "SC (multi-frame true colour)",
    "1.2.840.10008.5.1.4.1.1.7.2": "SC (multi-frame grayscale)",
}

NAME = "job"
HELP = "show one job: what arrived, its timeline, stage timings, outputs and deliveries"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", type=int, metavar="ID", help="the job's id (see spinenode jobs)")
    add_joblog_arguments(parser)


def render(detail: JobDetail) -> str:
    """The human-readable report of one job (UTC times; no patient identifiers)."""
    s = detail.summary
    lines = [
        f"job {s.job_id}: {s.state.value}" + (f" ({s.reason})" if s.reason else ""),
        f"  study UID   {s.study_uid}",
        f"  series UID  {s.series_uid}",
        f"  modality    {s.modality}, {s.instances} instances from {s.calling_ae} "
        f"({', '.join(detail.peer_hosts) or '-'})"
        + ("; their files were deleted by retention" if s.spool_purged else ""),
        f"  received    {when_text(detail.first_instance_at)} … "
        f"{when_text(detail.last_instance_at)} UTC",
        f"  attempts    {s.attempts}; worker {s.worker or '-'}; lease until "
        f"{when_text(detail.lease_until)}",
    ]
    for section in (_timeline, _stages, _outputs, _deliveries, _instance_events):
        text = section(detail)
        if text:
            lines += ["", text]
    return "\n".join(lines)


def _timeline(detail: JobDetail) -> str:
    rows = [
        [when_text(e.at), e.source.value if e.source else "-", e.target.value, e.worker, e.reason]
        for e in detail.events
    ]
    return "timeline (UTC):\n" + table(("AT", "FROM", "TO", "WORKER", "REASON"), rows)


def _stages(detail: JobDetail) -> str:
    if not detail.stages:
        return ""
    rows = [[t.attempt, t.stage, f"{t.seconds:.2f}"] for t in detail.stages]
    return "stage timings:\n" + table(("TRY", "STAGE", "SECONDS"), rows)


def _outputs(detail: JobDetail) -> str:
    if not detail.outputs:
        return ""
    rows = [
        [SOP_CLASS_NAMES.get(o.sop_class_uid, o.sop_class_uid), o.sop_instance_uid, o.path]
        for o in detail.outputs
    ]
    return f"outputs ({len(rows)}):\n" + table(("KIND", "SOP INSTANCE UID", "FILE"), rows)


def _instance_events(detail: JobDetail) -> str:
    if not detail.instance_events:
        return ""
    rows = [
        [when_text(e.at), e.kind, e.calling_ae, e.peer_host, e.sop_instance_uid]
        for e in detail.instance_events
    ]
    header = ("AT", "KIND", "FROM AE", "HOST", "SOP INSTANCE UID")
    return "instance events (re-sends):\n" + table(header, rows)


def _deliveries(detail: JobDetail) -> str:
    if not detail.deliveries:
        return "deliveries: none"
    rows = [
        [
            d.destination,
            d.state.value,
            d.attempts,
            when_text(d.next_attempt_at),
            d.sop_instance_uid,
            d.path,
            d.last_error or "",
        ]
        for d in detail.deliveries
    ]
    header = ("DESTINATION", "STATE", "TRIES", "NEXT TRY", "SOP INSTANCE UID", "FILE", "LAST ERROR")
    return f"deliveries ({len(rows)}):\n" + table(header, rows)


def run(args: argparse.Namespace) -> int:
    try:
        with open_joblog(args) as log:
            detail = log.job(args.job_id)
    except JobNotFoundError as exc:
        return fail(f"job: {exc}", 1)
    except (SettingsError, StorageError) as exc:
        return fail(f"job: {exc}", 2)
    if args.json:
        print_json(detail.to_json())
    else:
        print(render(detail))
    return 0

"""``spinenode retry JOB``: run a failed job again, or re-send its deliveries that gave up."""

from __future__ import annotations

import argparse

from node.cli.jobs import add_joblog_arguments, fail, open_joblog, print_json
from node.settings import SettingsError
from storage.errors import InvalidTransitionError, JobNotFoundError, StorageError

NAME = "retry"
HELP = "retry a failed job (re-sends deliveries that gave up, else analyses the series again)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("job_id", type=int, metavar="JOB", help="the failed job's id")
    add_joblog_arguments(parser)


def run(args: argparse.Namespace) -> int:
    try:
        with open_joblog(args) as log:
            log.retry(args.job_id)
            summary = log.job(args.job_id).summary
    except (JobNotFoundError, InvalidTransitionError) as exc:
        return fail(f"retry: {exc}", 1)
    except (SettingsError, StorageError) as exc:
        return fail(f"retry: {exc}", 2)
    if args.json:
        print_json(summary.to_json())
    else:
        print(f"job {summary.job_id}: failed → {summary.state.value} ({summary.reason})")
    return 0

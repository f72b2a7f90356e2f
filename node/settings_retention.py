"""The ``[retention]`` settings: how long the node keeps finished work (:mod:`node.retention`)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from node.settings_file import SettingsError


@dataclass(frozen=True, slots=True)
class RetentionSettings:
    """How long finished work is kept (days; 0 keeps it forever). See :mod:`node.retention`.

    ``spool_days`` = 7: received instances of a finished job are what ``spinenode retry`` re-runs
    the analysis on and what a forgotten failure is investigated with; a week covers a long
    weekend and a holiday before anyone looks, and at 50 spine CTs of ~160 MB a day it holds
    ~55 GB. ``outputs_days`` = 30: the results (SEG, SR, secondary captures, ``result.json``) are
    a few MB per job, and keeping them a month lets given-up deliveries be re-sent to a PACS that
    was down or migrated. ``joblog_days`` = 0: job-log rows are small and are the audit trail;
    set it (at least as long as the other two) to drop old jobs' rows as well.
    ``interval_seconds`` = 3600: how often the sweep runs.
    """

    spool_days: float = 7.0
    outputs_days: float = 30.0
    joblog_days: float = 0.0
    interval_seconds: float = 3600.0


def validate_retention(r: RetentionSettings) -> None:
    """Plain errors for impossible retention settings."""
    for name in ("spool_days", "outputs_days", "joblog_days"):
        value = getattr(r, name)
        if not (math.isfinite(value) and value >= 0):
            raise SettingsError(
                f"retention.{name} = {value} must be a number of days >= 0 (0: keep forever)",
                value,
            )
    if not (math.isfinite(r.interval_seconds) and r.interval_seconds > 0):
        raise SettingsError(
            f"retention.interval_seconds = {r.interval_seconds} must be a positive number of "
            "seconds",
            r.interval_seconds,
        )
    if r.joblog_days and (
        not r.spool_days or not r.outputs_days or r.joblog_days < max(r.spool_days, r.outputs_days)
    ):
        raise SettingsError(
            f"retention.joblog_days = {r.joblog_days:g} needs retention.spool_days and "
            "retention.outputs_days set (not 0) and not longer: a job's rows go only after its "
            "files",
            r.joblog_days,
        )

"""Settings of issue 7's operations work: ``[retention]`` and ``worker.max_job_seconds``."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.settings import RetentionSettings, Settings, SettingsError


def _load(tmp_path: Path, text: str, env: dict[str, str] | None = None) -> Settings:
    path = tmp_path / "spinenode.toml"
    path.write_text(text, encoding="utf-8")
    return Settings.load(path, env or {})


def test_defaults_keep_a_week_of_input_a_month_of_output_and_the_job_log() -> None:
    s = Settings()
    assert s.retention == RetentionSettings(7.0, 30.0, 0.0, 3600.0)
    assert s.max_job_seconds == 900.0


def test_file_and_environment(tmp_path: Path) -> None:
    text = "[retention]\nspool_days = 3\noutputs_days = 10\n[worker]\nmax_job_seconds = 60\n"
    s = _load(tmp_path, text, {"SPINENODE_RETENTION_JOBLOG_DAYS": "365"})
    assert s.retention == RetentionSettings(3.0, 10.0, 365.0, 3600.0)
    assert s.max_job_seconds == 60.0
    env = {"SPINENODE_WORKER_MAX_JOB_SECONDS": "1.5", "SPINENODE_RETENTION_SPOOL_DAYS": "0"}
    s = _load(tmp_path, "", env)
    assert (s.max_job_seconds, s.retention.spool_days) == (1.5, 0.0)  # 0: keep forever


@pytest.mark.parametrize(
    ("text", "fragment"),
    [
        ("[retention]\nspool_days = -1\n", "retention.spool_days = -1.0 must be a number of days"),
        ("[retention]\nspool_dais = 3\n", "unknown key(s) in [retention]: spool_dais"),
        ('[retention]\noutputs_days = "soon"\n', "retention.outputs_days = 'soon' is not"),
        ("[retention]\ninterval_seconds = 0\n", "retention.interval_seconds = 0.0 must be"),
        ("[retention]\njoblog_days = 20\n", "retention.joblog_days = 20 needs"),
        ("[retention]\nspool_days = 0\njoblog_days = 400\n", "needs retention.spool_days"),
        ("[worker]\nmax_job_seconds = 0\n", "max_job_seconds = 0.0 must be a positive number"),
    ],
)
def test_invalid_values_are_refused_with_a_plain_message(
    tmp_path: Path, text: str, fragment: str
) -> None:
    with pytest.raises(SettingsError) as info:
        _load(tmp_path, text)
    assert fragment in str(info.value)

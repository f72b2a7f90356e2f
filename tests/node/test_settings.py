"""Settings: TOML file + SPINENODE_* environment, validated with plain errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.settings import Settings, SettingsError
from tests.conftest import REPO_ROOT

EXAMPLE = """
[node]
ae_title = "SPINE1"
port = 4242
data_dir = "{data}"
max_associations = 4

[scheduler]
quiet_seconds = 3

[selection]
modalities = ["CT"]
min_slices = 5
max_slice_spacing_mm = 2.5

[worker]
count = 2
lease_seconds = 30
heartbeat_seconds = 5

[[allow]]
ae_title = "PACS"
host = "127.0.0.1"

[[allow]]
ae_title = "MODALITY"

[destinations.pacs]
ae_title = "PACS"
host = "127.0.0.1"
port = 11113

[destinations.archive]
ae_title = "ARCHIVE"
host = "10.1.2.3"
port = 104
tls = true

[[routes]]
calling_ae = "MODALITY"
destinations = ["pacs", "archive"]
"""


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "spinenode.toml"
    path.write_text(text, encoding="utf-8")
    return path


def test_defaults() -> None:
    s = Settings.load(None, {})
    assert s.ae_title == "SPINENODE"
    assert s.port == 11112
    assert s.data_dir == Path("var").absolute()
    assert s.database_url == f"sqlite:///{Path('var').absolute() / 'spinenode.db'}"
    assert s.spool_dir == s.data_dir / "spool"
    assert s.quiet_seconds == 10.0
    assert s.scp_processes == 2


def test_scp_processes_from_file_and_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, "[scp]\nprocesses = 4\n")
    assert Settings.load(path, {}).scp_processes == 4
    assert Settings.load(path, {"SPINENODE_SCP_PROCESSES": "0"}).scp_processes == 0


def test_scp_pool_files_from_file_and_environment(tmp_path: Path) -> None:
    assert Settings().scp_pool_files == 320
    path = _write(tmp_path, "[scp]\npool_files = 40\n")
    assert Settings.load(path, {}).scp_pool_files == 40
    assert Settings.load(path, {"SPINENODE_SCP_POOL_FILES": "0"}).scp_pool_files == 0


def test_file_and_environment(tmp_path: Path) -> None:
    path = _write(tmp_path, EXAMPLE.format(data=tmp_path / "data"))
    s = Settings.load(path, {"SPINENODE_PORT": "5555", "SPINENODE_WORKER_COUNT": "3"})
    assert (s.ae_title, s.port, s.worker_count, s.max_associations) == ("SPINE1", 5555, 3, 4)
    assert s.database_url == f"sqlite:///{tmp_path / 'data' / 'spinenode.db'}"
    assert s.selection.min_slices == 5
    assert s.allow[0].host == "127.0.0.1" and s.allow[1].host is None
    assert [d.name for d in s.routes_for("MODALITY")] == ["pacs", "archive"]
    # no rule: results go back to the sender's own destination entry
    assert [d.name for d in s.routes_for("PACS")] == ["pacs"]
    assert s.routes_for("UNKNOWN") == ()
    assert s.destination("archive").tls is True


def test_config_from_environment_variable(tmp_path: Path) -> None:
    path = _write(tmp_path, '[node]\nae_title = "FROMFILE"\n')
    env = {"SPINENODE_CONFIG": str(path), "SPINENODE_DATABASE_URL": "sqlite:///x.db"}
    s = Settings.load(None, env)
    assert s.ae_title == "FROMFILE"
    assert s.database_url == "sqlite:///x.db"


def test_backoff_is_exponential_and_capped() -> None:
    s = Settings().with_changes(backoff_seconds=2.0, backoff_max_seconds=10.0)
    assert [s.backoff(n) for n in (1, 2, 3, 4, 5)] == [2.0, 4.0, 8.0, 10.0, 10.0]


@pytest.mark.parametrize(
    ("text", "env", "fragment"),
    [
        ('[node]\nae_title = "WAY_TOO_LONG_AE_TITLE"\n', {}, "not a valid AE title"),
        ('[node]\nae_title = "BAD\\\\AE"\n', {}, "not a valid AE title"),
        ("[node]\nport = 70000\n", {}, "not a TCP port (0 to 65535)"),
        ('[node]\nport = "abc"\n', {}, "not a valid int"),
        ("", {"SPINENODE_PORT": "eleven"}, "not a valid int"),
        ("[node]\nprot = 1\n", {}, "unknown key(s) in [node]: prot"),
        ("[nodes]\n", {}, "unknown section"),
        ("[scp]\nprocesses = -1\n", {}, "scp.processes = -1 must be 0"),
        ("", {"SPINENODE_SCP_PROCESSES": "33"}, "to 32 receiving processes"),
        ("[scp]\npool_files = -1\n", {}, "scp.pool_files = -1 must be 0"),
        ("[scp]\nthreads = 2\n", {}, "unknown key(s) in [scp]: threads"),
        ("[worker]\nlease_seconds = 10\nheartbeat_seconds = 8\n", {}, "at most half"),
        ("[scheduler]\nquiet_seconds = -1\n", {}, "positive number of seconds"),
        ("[tls]\nenabled = true\n", {}, "tls.cert is not set"),
        ('[[routes]]\ncalling_ae = "X"\ndestinations = ["nowhere"]\n', {}, "not defined"),
        ('[destinations.a]\nae_title = "A"\nhost = "h"\nport = 0\n', {}, "not a TCP port"),
        ("[node\n", {}, "not valid TOML"),
    ],
)
def test_invalid_settings_are_refused_with_a_plain_message(
    tmp_path: Path, text: str, env: dict[str, str], fragment: str
) -> None:
    with pytest.raises(SettingsError) as info:
        Settings.load(_write(tmp_path, text), env)
    assert fragment in str(info.value)


def test_missing_file_is_a_settings_error(tmp_path: Path) -> None:
    with pytest.raises(SettingsError, match="cannot read settings file"):
        Settings.load(tmp_path / "absent.toml", {})


def test_other_spinenode_variables_are_not_settings(caplog: pytest.LogCaptureFixture) -> None:
    env = {"SPINENODE_DATA": "/somewhere", "SPINENODE_PROT": "1"}
    assert Settings.load(None, env).port == 11112
    assert "ignoring SPINENODE_PROT" in caplog.text
    assert "ignoring SPINENODE_DATA:" not in caplog.text


def test_the_example_configuration_in_deploy_is_valid() -> None:
    s = Settings.load(REPO_ROOT / "deploy" / "spinenode.toml", {})
    assert s == Settings.load(None, {}).with_changes(
        allow=s.allow, destinations=s.destinations, routes=s.routes
    )  # the example shows the defaults
    assert [d.name for d in s.routes_for("CT_SCANNER_1")] == ["pacs", "research"]


def test_port_0_asks_for_a_free_port(tmp_path: Path) -> None:
    assert Settings.load(_write(tmp_path, "[node]\nport = 0\n"), {}).port == 0

"""The node's settings: one TOML file plus ``SPINENODE_*`` environment variables.

Loaded once at start-up by :meth:`Settings.load`, validated with plain error messages, and passed
down as arguments; there is no global configuration object. Environment variables override the file.

The TOML layout (see ``deploy/spinenode.toml`` for a commented example)::

    [node]          ae_title, bind_address, port, data_dir, database_url, max_associations,
                    check_called_ae, min_free_mb, acse_timeout_s, dimse_timeout_s, network_timeout_s
    [scp]           processes (receiving processes; 0: the SCP runs in the serving process),
                    pool_files (spool files each receiving process makes ahead; 0: none)
    [tls]           enabled, cert, key, ca, require_client_cert
    [[allow]]       ae_title, host (optional)         -- empty list: any calling AE is accepted
    [scheduler]     quiet_seconds, poll_seconds
    [selection]     modalities, min_slices, max_slice_spacing_mm
    [worker]        count, analyzer ("module:attribute"), lease_seconds, heartbeat_seconds,
                    max_job_seconds
    [delivery]      max_attempts, backoff_seconds, backoff_max_seconds, poll_seconds
    [retention]     spool_days, outputs_days, joblog_days, interval_seconds
    [destinations.NAME]  ae_title, host, port, tls
    [[routes]]      calling_ae, destinations = [NAME, ...]

Environment: keys of ``[node]`` are ``SPINENODE_<KEY>`` (``SPINENODE_PORT``, ``SPINENODE_DATA_DIR``,
``SPINENODE_DATABASE_URL``); keys of the other scalar sections are ``SPINENODE_<SECTION>_<KEY>``
(``SPINENODE_WORKER_COUNT``, ``SPINENODE_TLS_CERT``). ``SPINENODE_CONFIG`` names the file when no
path is given. Relative paths are taken relative to the current directory and made absolute.
"""

from __future__ import annotations

import math
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from node.settings_file import (
    KEY_TYPES,
    SCALAR_SECTIONS,
    SettingsError,
    apply_environ,
    convert,
    records,
    section_table,
)
from node.settings_retention import RetentionSettings, validate_retention
from node.settings_values import (
    AllowedPeer,
    Destination,
    RoutingRule,
    SelectionRules,
    TLSSettings,
)

__all__ = [
    "AllowedPeer",
    "Destination",
    "RetentionSettings",
    "RoutingRule",
    "SelectionRules",
    "Settings",
    "SettingsError",
    "TLSSettings",
    "validate_ae_title",
]


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of the node, validated (see the module docstring for the file layout).

    ``quiet_seconds`` defaults to 10 s: a PACS pushes a series as a burst of C-STOREs milliseconds
    apart, and even a PACS that opens one association per image, or a scanner that streams slices as
    they are reconstructed, leaves gaps well under a few seconds; 10 s comfortably covers these
    while keeping results inside the one-minute promise. Raise it for senders known to pause longer
    (a series that arrives after its job started gets a new job, never a lost image).

    ``scp_processes`` defaults to 2 receiving processes (:mod:`node.receivers`): one Python process
    receives at about one core (the GIL), so a PACS sending on several associations needs two to
    use a 2-core machine; the worker is idle while a series arrives (it starts after the quiet
    period), so the two do not compete with it. More than the machine's cores gains nothing.

    ``scp_pool_files`` defaults to 320 spool files made ahead of time per receiving process
    (:mod:`storage.spool_pool`; 576 KiB each for 512 × 512 slices, 184 MB of disk per process):
    a PACS that sends a 300-slice series on one association sends it all to one receiver, so
    each holds a whole series; 0 writes every instance the usual way (two journal commits).

    ``port`` 0 listens on a free port that the system picks; ``serve`` logs the port it bound
    ("serving on HOST:PORT"), for tests and for a node run next to others.
    """

    ae_title: str = "SPINENODE"
    bind_address: str = "0.0.0.0"
    port: int = 11112
    data_dir: Path = field(default_factory=lambda: Path("var").absolute())
    database: str = ""
    max_associations: int = 10
    check_called_ae: bool = True
    min_free_mb: int = 1024
    acse_timeout_s: float = 30.0
    dimse_timeout_s: float = 60.0
    network_timeout_s: float = 60.0
    scp_processes: int = 2
    scp_pool_files: int = 320
    tls: TLSSettings = field(default_factory=TLSSettings)
    allow: tuple[AllowedPeer, ...] = ()
    quiet_seconds: float = 10.0
    scheduler_poll_seconds: float = 1.0
    selection: SelectionRules = field(default_factory=SelectionRules)
    worker_count: int = 1
    analyzer: str = "node.default_analyzer:analyze"
    lease_seconds: float = 120.0
    heartbeat_seconds: float = 10.0
    max_job_seconds: float = 900.0
    max_attempts: int = 6
    backoff_seconds: float = 10.0
    backoff_max_seconds: float = 900.0
    delivery_poll_seconds: float = 1.0
    destinations: tuple[Destination, ...] = ()
    routes: tuple[RoutingRule, ...] = ()
    retention: RetentionSettings = field(default_factory=RetentionSettings)

    def __post_init__(self) -> None:
        _validate(self)

    @property
    def database_url(self) -> str:
        """The job log's SQLAlchemy URL: ``node.database_url``, else SQLite in ``data_dir``."""
        return self.database or f"sqlite:///{self.data_dir / 'spinenode.db'}"

    @property
    def spool_dir(self) -> Path:
        """Where received instances are kept: ``data_dir/spool``."""
        return self.data_dir / "spool"

    @property
    def work_dir(self) -> Path:
        """Scratch and output folders of jobs: ``data_dir/work``."""
        return self.data_dir / "work"

    @property
    def min_free_bytes(self) -> int:
        return self.min_free_mb * 1024 * 1024

    def destination(self, name: str) -> Destination:
        """The destination called ``name``; :class:`SettingsError` if there is none."""
        for dest in self.destinations:
            if dest.name == name:
                return dest
        raise SettingsError(f"no destination named {name!r} in [destinations]", name)

    def routes_for(self, calling_ae: str) -> tuple[Destination, ...]:
        """Where results of a series sent by ``calling_ae`` go.

        A ``[[routes]]`` rule for the AE wins; otherwise the results go back to every destination
        whose AE title is the calling AE (the sender's own PACS entry); otherwise nowhere.
        """
        for rule in self.routes:
            if rule.calling_ae == calling_ae:
                return tuple(self.destination(n) for n in rule.destinations)
        return tuple(d for d in self.destinations if d.ae_title == calling_ae)

    def backoff(self, attempts: int) -> float:
        """Seconds to wait after ``attempts`` failed attempts (exponential, capped)."""
        return float(
            min(self.backoff_max_seconds, self.backoff_seconds * 2 ** max(0, attempts - 1))
        )

    @classmethod
    def load(cls, path: Path | None, environ: Mapping[str, str]) -> Settings:
        """Read ``path`` (or ``$SPINENODE_CONFIG``, or nothing: the defaults), then the environment.

        Raises
        ------
        SettingsError
            The file cannot be read or parsed, a key is unknown, or a value is invalid.
        """
        if path is None and environ.get("SPINENODE_CONFIG"):
            path = Path(environ["SPINENODE_CONFIG"])
        doc: dict[str, Any] = {}
        if path is not None:
            try:
                doc = tomllib.loads(path.read_text(encoding="utf-8"))
            except OSError as exc:
                raise SettingsError(f"cannot read settings file {path}: {exc}", str(path)) from exc
            except tomllib.TOMLDecodeError as exc:
                raise SettingsError(
                    f"settings file {path} is not valid TOML: {exc}", str(path)
                ) from exc
        return cls.from_mapping(apply_environ(doc, environ))

    @classmethod
    def from_mapping(cls, doc: Mapping[str, Any]) -> Settings:
        """Build settings from the parsed TOML layout (unknown sections or keys are errors)."""
        return cls(**_parse_document(doc))

    def with_changes(self, **changes: Any) -> Settings:
        """A copy with some fields replaced (validated again)."""
        return replace(self, **changes)


#: More receiving processes than this only add memory: each takes a core under load.
MAX_SCP_PROCESSES = 32
#: Pooled spool files per receiving process at most (each is the size of one instance).
MAX_POOL_FILES = 10_000


def is_printable_ascii(text: str) -> bool:
    return all(32 <= ord(ch) < 127 for ch in text)


def validate_ae_title(value: str, where: str) -> str:
    """An AE title: 1–16 printable ASCII characters, no backslash, not all spaces."""
    if not value.strip() or len(value) > 16 or not is_printable_ascii(value) or "\\" in value:
        raise SettingsError(
            f"{where} = {value!r} is not a valid AE title: use 1 to 16 printable ASCII characters "
            "(no backslash, not only spaces)",
            value,
        )
    return value


def _validate(s: Settings) -> None:
    validate_ae_title(s.ae_title, "node.ae_title")
    _check_port(s.port, "node.port", lowest=0)  # 0: a free port, logged once bound
    module, _, attribute = s.analyzer.partition(":")
    if not module or not attribute:
        raise SettingsError(
            f"worker.analyzer = {s.analyzer!r} must name a callable as 'module:attribute'",
            s.analyzer,
        )
    for name in ("max_associations", "min_free_mb", "worker_count", "max_attempts"):
        value = getattr(s, name)
        lowest = 0 if name == "min_free_mb" else 1
        if value < lowest:
            raise SettingsError(f"{name} = {value} must be at least {lowest}", value)
    for f in fields(s):
        value = getattr(s, f.name)
        if f.name.endswith(("_s", "_seconds")) and not (math.isfinite(value) and value > 0):
            raise SettingsError(f"{f.name} = {value} must be a positive number of seconds", value)
    if not 0 <= s.scp_processes <= MAX_SCP_PROCESSES:
        raise SettingsError(
            f"scp.processes = {s.scp_processes} must be 0 (the SCP in the serving process) to "
            f"{MAX_SCP_PROCESSES} receiving processes",
            s.scp_processes,
        )
    if not 0 <= s.scp_pool_files <= MAX_POOL_FILES:
        raise SettingsError(
            f"scp.pool_files = {s.scp_pool_files} must be 0 (no pool) to {MAX_POOL_FILES}",
            s.scp_pool_files,
        )
    if s.heartbeat_seconds * 2 > s.lease_seconds:
        raise SettingsError(
            f"worker.heartbeat_seconds ({s.heartbeat_seconds}) must be at most half of "
            f"worker.lease_seconds ({s.lease_seconds}), or a live worker loses its lease",
            s.heartbeat_seconds,
        )
    if s.backoff_max_seconds < s.backoff_seconds:
        raise SettingsError("delivery.backoff_max_seconds must be >= delivery.backoff_seconds")
    sel = s.selection
    if not sel.modalities or sel.min_slices < 1 or not sel.max_slice_spacing_mm > 0:
        raise SettingsError(
            "selection needs at least one modality, min_slices >= 1 and max_slice_spacing_mm > 0",
            sel,
        )
    _validate_tls(s.tls)
    _validate_peers(s)
    validate_retention(s.retention)


def _check_port(port: int, where: str, lowest: int = 1) -> None:
    if not lowest <= port <= 65535:
        raise SettingsError(f"{where} = {port} is not a TCP port ({lowest} to 65535)", port)


def _validate_tls(tls: TLSSettings) -> None:
    if not tls.enabled:
        return
    for name in ("cert", "key", "ca"):
        path = getattr(tls, name)
        if name == "ca" and path is None and not tls.require_client_cert:
            continue
        if path is None:
            raise SettingsError(f"tls.enabled is true but tls.{name} is not set")
        if not path.is_file():
            raise SettingsError(f"tls.{name} = {path} is not a readable file", str(path))


def _validate_peers(s: Settings) -> None:
    for peer in s.allow:
        validate_ae_title(peer.ae_title, "allow.ae_title")
    names: set[str] = set()
    for dest in s.destinations:
        if dest.name in names:
            raise SettingsError(f"destination {dest.name!r} is defined twice", dest.name)
        names.add(dest.name)
        validate_ae_title(dest.ae_title, f"destinations.{dest.name}.ae_title")
        _check_port(dest.port, f"destinations.{dest.name}.port")
        if not dest.host:
            raise SettingsError(f"destinations.{dest.name}.host is empty", dest.name)
    for rule in s.routes:
        validate_ae_title(rule.calling_ae, "routes.calling_ae")
        for name in rule.destinations:
            if name not in names:
                raise SettingsError(
                    f"route for {rule.calling_ae!r} names destination {name!r}, which is not "
                    f"defined; defined: {', '.join(sorted(names)) or 'none'}",
                    name,
                )


# --- parsing the TOML layout into Settings fields ---

# (section, key) -> Settings field, for the sections that are flattened into Settings.
_FIELD_OF: dict[tuple[str, str], str] = {
    **{("node", k): k for k in SCALAR_SECTIONS["node"] if k != "database_url"},
    ("node", "database_url"): "database",
    **{("worker", k): k for k in ("lease_seconds", "heartbeat_seconds", "max_job_seconds")},
    **{("delivery", k): k for k in ("max_attempts", "backoff_seconds", "backoff_max_seconds")},
    ("scp", "processes"): "scp_processes",
    ("scp", "pool_files"): "scp_pool_files",
    ("scheduler", "quiet_seconds"): "quiet_seconds",
    ("scheduler", "poll_seconds"): "scheduler_poll_seconds",
    ("worker", "count"): "worker_count",
    ("worker", "analyzer"): "analyzer",
    ("delivery", "poll_seconds"): "delivery_poll_seconds",
}


def _parse_document(doc: Mapping[str, Any]) -> dict[str, Any]:
    allowed = {*SCALAR_SECTIONS, "allow", "destinations", "routes"}
    unknown = set(doc) - allowed
    if unknown:
        raise SettingsError(
            f"unknown section(s) {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(sorted(allowed))}",
            sorted(unknown),
        )
    out: dict[str, Any] = {}
    for section in ("node", "scp", "scheduler", "worker", "delivery"):
        for key, value in section_table(doc, section).items():
            kind = KEY_TYPES[(section, key)]
            out[_FIELD_OF[(section, key)]] = convert(value, kind, f"{section}.{key}")
    sections: tuple[tuple[str, type], ...] = (
        ("tls", TLSSettings),
        ("selection", SelectionRules),
        ("retention", RetentionSettings),
    )
    for section, cls in sections:
        values = {
            k: convert(v, KEY_TYPES[(section, k)], f"{section}.{k}")
            for k, v in section_table(doc, section).items()
        }
        out[section] = cls(**values)
    out["allow"] = tuple(_parse_allow(doc.get("allow", [])))
    out["destinations"] = tuple(_parse_destinations(doc.get("destinations", {})))
    out["routes"] = tuple(_parse_routes(doc.get("routes", [])))
    return out


def _parse_allow(value: object) -> list[AllowedPeer]:
    peers = []
    for item in records(value, "allow", {"ae_title", "host"}):
        host = convert(item["host"], str, "allow.host") if "host" in item else None
        peers.append(AllowedPeer(convert(item.get("ae_title"), str, "allow.ae_title"), host))
    return peers


def _parse_destinations(value: object) -> list[Destination]:
    if not isinstance(value, Mapping):
        raise SettingsError("[destinations] must be a table of [destinations.NAME] tables")
    dests = []
    for name, item in value.items():
        where = f"destinations.{name}"
        records([item], where, {"ae_title", "host", "port", "tls"})
        dests.append(
            Destination(
                name=name,
                ae_title=convert(item.get("ae_title"), str, f"{where}.ae_title"),
                host=convert(item.get("host"), str, f"{where}.host"),
                port=convert(item.get("port", 104), int, f"{where}.port"),
                tls=convert(item.get("tls", False), bool, f"{where}.tls"),
            )
        )
    return dests


def _parse_routes(value: object) -> list[RoutingRule]:
    return [
        RoutingRule(
            calling_ae=convert(item.get("calling_ae"), str, "routes.calling_ae"),
            destinations=convert(item.get("destinations", []), tuple, "routes.destinations"),
        )
        for item in records(value, "routes", {"calling_ae", "destinations"})
    ]

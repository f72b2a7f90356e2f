"""Reading the settings file and the environment: key types, conversions, plain errors.

:mod:`node.settings` builds the :class:`~node.settings.Settings` value from what this returns.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

logger = logging.getLogger(__name__)

#: ``SPINENODE_*`` variables that are not settings (read by tests, benchmarks or ``load``).
NON_SETTING_VARIABLES = frozenset(
    {"SPINENODE_CONFIG", "SPINENODE_DATA", "SPINENODE_TEST_POSTGRES_URL"}
)


class SettingsError(ValueError):
    """An invalid setting; the message names the key and says what is allowed."""

    def __init__(self, message: str, value: object = None) -> None:
        super().__init__(message)
        self.value = value


# Every scalar key: (section, key) -> its type. Used for parsing, the environment and errors.
KEY_TYPES: dict[tuple[str, str], type] = {
    ("node", "ae_title"): str,
    ("node", "bind_address"): str,
    ("node", "port"): int,
    ("node", "data_dir"): Path,
    ("node", "database_url"): str,
    ("node", "max_associations"): int,
    ("node", "check_called_ae"): bool,
    ("node", "min_free_mb"): int,
    ("node", "acse_timeout_s"): float,
    ("node", "dimse_timeout_s"): float,
    ("node", "network_timeout_s"): float,
    ("tls", "enabled"): bool,
    ("tls", "cert"): Path,
    ("tls", "key"): Path,
    ("tls", "ca"): Path,
    ("tls", "require_client_cert"): bool,
    ("scp", "processes"): int,
    ("scp", "pool_files"): int,
    ("scheduler", "quiet_seconds"): float,
    ("scheduler", "poll_seconds"): float,
    ("selection", "modalities"): tuple,
    ("selection", "min_slices"): int,
    ("selection", "max_slice_spacing_mm"): float,
    ("worker", "count"): int,
    ("worker", "analyzer"): str,
    ("worker", "lease_seconds"): float,
    ("worker", "heartbeat_seconds"): float,
    ("worker", "max_job_seconds"): float,
    ("delivery", "max_attempts"): int,
    ("delivery", "backoff_seconds"): float,
    ("delivery", "backoff_max_seconds"): float,
    ("delivery", "poll_seconds"): float,
    ("retention", "spool_days"): float,
    ("retention", "outputs_days"): float,
    ("retention", "joblog_days"): float,
    ("retention", "interval_seconds"): float,
}
SCALAR_SECTIONS: dict[str, tuple[str, ...]] = {
    sec: tuple(k for s, k in KEY_TYPES if s == sec)
    for sec in dict.fromkeys(s for s, _ in KEY_TYPES)
}


def env_name(section: str, key: str) -> str:
    """The environment variable of a scalar setting."""
    if section == "node":
        return f"SPINENODE_{key.upper()}"
    return f"SPINENODE_{section.upper()}_{key.upper()}"


def apply_environ(doc: dict[str, Any], environ: Mapping[str, str]) -> dict[str, Any]:
    known = {env_name(s, k): (s, k) for s, keys in SCALAR_SECTIONS.items() for k in keys}
    merged = {k: (dict(v) if isinstance(v, dict) else v) for k, v in doc.items()}
    for name, raw in environ.items():
        if not name.startswith("SPINENODE_") or name in NON_SETTING_VARIABLES:
            continue
        if name not in known:
            # Other parts of the project may read their own SPINENODE_* variables: a typo here
            # is worth a warning, not a refusal to start.
            logger.warning(
                "ignoring %s: not a node setting (settings variables: %s)",
                name,
                ", ".join(sorted(known)),
            )
            continue
        section, key = known[name]
        table = merged.setdefault(section, {})
        if not isinstance(table, dict):
            raise SettingsError(f"[{section}] must be a table", section)
        table[key] = _EnvValue(raw)
    return merged


@dataclass(frozen=True, slots=True)
class _EnvValue:
    """A raw string from the environment; converted to the key's type by the parser."""

    raw: str


_KIND_NAMES: dict[type, str] = {tuple: "list of strings", Path: "path"}
_BOOL_WORDS = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}


def _to_bool(raw: object) -> bool:
    if isinstance(raw, bool):
        return raw
    if isinstance(raw, str) and raw.strip().lower() in _BOOL_WORDS:
        return _BOOL_WORDS[raw.strip().lower()]
    raise ValueError(raw)


def _to_number(kind: type[int] | type[float]) -> Any:
    def convert(raw: object) -> int | float:
        if isinstance(raw, bool) or not isinstance(raw, str | int | float):
            raise ValueError(raw)
        if kind is int and isinstance(raw, float):
            raise ValueError(raw)
        return kind(raw)

    return convert


def _to_str(raw: object) -> str:
    if not isinstance(raw, str):
        raise ValueError(raw)
    return raw


def _to_path(raw: object) -> Path:
    return Path(_to_str(raw)).expanduser().absolute() if raw else _fail(raw)


def _to_tuple(raw: object) -> tuple[str, ...]:
    if not isinstance(raw, str | list):
        raise ValueError(raw)
    items = raw.split(",") if isinstance(raw, str) else raw
    return tuple(str(i).strip() for i in items if str(i).strip())


def _fail(raw: object) -> Any:
    raise ValueError(raw)


_CONVERTERS: dict[type, Any] = {
    bool: _to_bool,
    int: _to_number(int),
    float: _to_number(float),
    str: _to_str,
    Path: _to_path,
    tuple: _to_tuple,
}


def convert(value: object, kind: type, where: str) -> Any:
    """``value`` (TOML value or environment string) as ``kind``, or a SettingsError."""
    raw = value.raw if isinstance(value, _EnvValue) else value
    try:
        return _CONVERTERS[kind](raw)
    except (TypeError, ValueError):
        name = _KIND_NAMES.get(kind, kind.__name__)
        raise SettingsError(f"{where} = {raw!r} is not a valid {name}", raw) from None


def section_table(doc: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    table = doc.get(name, {})
    if not isinstance(table, Mapping):
        raise SettingsError(f"[{name}] must be a table", name)
    unknown = set(table) - set(SCALAR_SECTIONS[name])
    if unknown:
        raise SettingsError(
            f"unknown key(s) in [{name}]: {', '.join(sorted(unknown))}; "
            f"allowed: {', '.join(SCALAR_SECTIONS[name])}",
            sorted(unknown),
        )
    return table


def records(value: object, where: str, keys: set[str]) -> list[Mapping[str, Any]]:
    if not isinstance(value, list) or not all(isinstance(v, Mapping) for v in value):
        raise SettingsError(f"{where} must be an array of tables ([[{where}]])", where)
    for item in value:
        extra = set(item) - keys
        if extra:
            raise SettingsError(
                f"unknown key(s) in [[{where}]]: {', '.join(sorted(extra))}; "
                f"allowed: {', '.join(sorted(keys))}",
                sorted(extra),
            )
    return value

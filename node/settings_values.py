"""The small values inside :class:`node.settings.Settings` (re-exported there)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True, slots=True)
class Destination:
    """A DICOM peer that results are sent to."""

    name: str
    ae_title: str
    host: str
    port: int
    tls: bool = False


@dataclass(frozen=True, slots=True)
class AllowedPeer:
    """A calling AE title that may store to the node, optionally only from one host."""

    ae_title: str
    host: str | None = None


@dataclass(frozen=True, slots=True)
class RoutingRule:
    """Results of series sent by ``calling_ae`` go to the named destinations."""

    calling_ae: str
    destinations: tuple[str, ...]


@dataclass(frozen=True, slots=True)
class TLSSettings:
    """Optional TLS on the SCP (and on SCU connections to destinations marked ``tls``)."""

    enabled: bool = False
    cert: Path | None = None
    key: Path | None = None
    ca: Path | None = None
    require_client_cert: bool = True


@dataclass(frozen=True, slots=True)
class SelectionRules:
    """Which complete series are analysed; the others are SKIPPED with the failed rule as reason."""

    modalities: tuple[str, ...] = ("CT",)
    min_slices: int = 20
    max_slice_spacing_mm: float = 3.0

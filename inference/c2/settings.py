"""Settings of the C2 pedicle screw feasibility assessment (one frozen value, passed down).

All lengths are millimetres. The defaults follow ALGORITHMS.md (C2 section): cut-off 4.78 mm
[Wu et al. 2023], outer width by default, sections every 0.25 mm resampled on a 0.1 mm grid.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from inference.errors import InferenceError
from inference.results import MPDKind

# Measurement error model of the geometric MPD (see docs/c2.md): sd(h) = hypot(SD0, SD_SLOPE * h)
# with h the coarsest voxel spacing in mm. Fitted on the phantom benchmark (bench/bench_c2.py).
MEASUREMENT_SD0_MM = 0.12
MEASUREMENT_SD_PER_MM = 0.12


@dataclass(frozen=True, slots=True)
class C2Settings:
    """How C2 is measured and classified.

    Attributes
    ----------
    cutoff_mm:
        Low risk when MPD ≥ this (4.78 mm: ROC-optimal for a 3.5 mm screw, Wu et al. 2023).
    mpd_kind:
        ``outer`` (cortical outer width, default) or ``endosteal`` (marrow cavity width).
    step_mm:
        Spacing of the oblique sections along the pedicle axis.
    grid_mm:
        Pixel size of each resampled oblique section.
    bone_hu:
        Threshold of the outer bone boundary (HU) when the volume has no better local estimate.
    cortex_hu:
        Voxels of a section at or above this are cortical bone (endosteal width = the region
        inside the cortex below it).
    max_spacing_mm:
        Coarsest voxel spacing for which an MPD is reported; above it the side gets a warning and
        no number.
    reliable_spacing_mm:
        Coarsest voxel spacing for which an MPD is called reliable; above it a warning is added.
    slice_count, slice_step_mm, slice_pixel_mm, slice_field_mm:
        The stack of oblique sections kept per side for the report and the learned classifier
        (C2-Net: 5 slices, 1 mm, centred on the narrowest section).
    """

    cutoff_mm: float = 4.78
    mpd_kind: MPDKind = MPDKind.OUTER
    step_mm: float = 0.25
    grid_mm: float = 0.1
    bone_hu: float = 300.0
    cortex_hu: float = 700.0
    max_spacing_mm: float = 3.0
    reliable_spacing_mm: float = 1.25
    slice_count: int = 5
    slice_step_mm: float = 1.0
    slice_pixel_mm: float = 0.5
    slice_field_mm: float = 32.0

    def __post_init__(self) -> None:
        positive = ("cutoff_mm", "step_mm", "grid_mm", "max_spacing_mm", "reliable_spacing_mm")
        for name in (*positive, "slice_step_mm", "slice_pixel_mm", "slice_field_mm"):
            if not getattr(self, name) > 0:
                raise InferenceError(f"C2 setting {name} must be > 0 mm", getattr(self, name))
        if self.slice_count < 1 or self.slice_count % 2 == 0:
            raise InferenceError("C2 setting slice_count must be odd and ≥ 1", self.slice_count)
        if self.grid_mm > 0.5:
            raise InferenceError("C2 setting grid_mm must be ≤ 0.5 mm", self.grid_mm)
        if not isinstance(self.mpd_kind, MPDKind):
            object.__setattr__(self, "mpd_kind", MPDKind(self.mpd_kind))

    @classmethod
    def from_mapping(cls, values: dict[str, Any]) -> C2Settings:
        """Build from a mapping (e.g. the ``[c2]`` table of the node's TOML); unknown keys fail."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise InferenceError(f"unknown C2 settings {unknown}; known: {sorted(known)}", unknown)
        return replace(cls(), **values)


def measurement_sd_mm(spacing_mm: float) -> float:
    """Standard deviation of the geometric MPD at a coarsest voxel spacing of ``spacing_mm``."""
    return float((MEASUREMENT_SD0_MM**2 + (MEASUREMENT_SD_PER_MM * spacing_mm) ** 2) ** 0.5)

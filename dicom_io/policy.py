"""What the series loader accepts, repairs, resamples or refuses (see docs/loading.md)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class TiltPolicy(StrEnum):
    """What to do with a gantry-tilted series (slices stacked obliquely to their image plane)."""

    RESAMPLE = "resample"
    """Resample onto an orthogonal grid (slice axis along the image normal); warn."""
    KEEP = "keep"
    """Return the sheared grid as it is: the affine's slice column is oblique to the image plane."""
    REFUSE = "refuse"
    """Raise :class:`~dicom_io.errors.GeometryError`."""


@dataclass(frozen=True, slots=True)
class LoadPolicy:
    """Tolerances of :func:`dicom_io.series.load_series`. Distances in millimetres.

    Attributes
    ----------
    min_slices:
        Fewer slices (frames) than this is not a volume: NotApplicableError.
    spacing_tolerance:
        Slice steps (distances between neighbouring slice planes along the image normal) that
        differ from the median step by at most this fraction (or 0.01 mm, whichever is larger)
        count as regular; the volume then keeps the mean step and is not resampled.
    resample_uneven:
        Resample uneven spacing or missing slices onto a regular grid (linear interpolation along
        the normal). When False such a series is refused.
    resample_spacing_mm:
        Spacing of that regular grid; ``None``: the median slice step.
    max_gap_mm, max_gap_ratio:
        A step larger than ``max_gap_mm``, or larger than ``max_gap_ratio`` × the grid spacing, is
        a gap too wide to interpolate across: the series is refused.
    duplicate_tolerance_mm:
        Two slices whose planes are closer than this are at the same position.
    drop_duplicates:
        Keep the first of slices at the same position (in the order given) and warn, instead of
        refusing. Byte-identical copies of one SOP instance are always dropped silently.
    tilt:
        Gantry tilt handling (:class:`TiltPolicy`); a stack whose positions drift in the image
        plane by more than ``tilt_tolerance_deg`` from the normal is tilted.
    max_tilt_deg:
        A larger tilt is refused whatever ``tilt`` says (not a gantry tilt; likely a mix-up).
    repair_uids:
        Replace empty or malformed SOP/Study/Series/Frame of Reference UIDs: SOP UIDs from the file
        meta header when it has them, the others derived deterministically from the SOP instance
        UIDs; each repair is stated in ``warnings``. When False such a series is refused.
    """

    min_slices: int = 2
    spacing_tolerance: float = 0.02
    resample_uneven: bool = True
    resample_spacing_mm: float | None = None
    max_gap_mm: float = 8.0
    max_gap_ratio: float = 3.0
    duplicate_tolerance_mm: float = 0.01
    drop_duplicates: bool = False
    tilt: TiltPolicy = TiltPolicy.RESAMPLE
    tilt_tolerance_deg: float = 0.01
    max_tilt_deg: float = 30.0
    repair_uids: bool = False

    def __post_init__(self) -> None:
        if self.min_slices < 2:
            raise ValueError("min_slices must be at least 2")
        if not 0 <= self.spacing_tolerance < 1:
            raise ValueError("spacing_tolerance is a fraction in [0, 1)")
        if self.resample_spacing_mm is not None and self.resample_spacing_mm <= 0:
            raise ValueError("resample_spacing_mm must be positive")
        if self.max_gap_mm <= 0 or self.max_gap_ratio < 1:
            raise ValueError("max_gap_mm must be positive and max_gap_ratio at least 1")

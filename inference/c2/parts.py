"""The C2 pediculoisthmic components as a map on the CT grid, for the DICOM-SEG.

Each side's component is the bone (HU ≥ ``C2Settings.bone_hu``) within ``radius_mm`` of the
measured pedicle axis and ``half_length_mm`` either side of the narrowest section, connected to
that section's centre: the region the MPD was measured in, not a full anatomical parcellation of
C2. Grid: ``hu`` indexed [slice, row, col] with the 4×4 affine index → LPS mm.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.c2.settings import C2Settings
from inference.results import C2Finding, Side

# The values the SEG writer reads (the phantom's part ids for the C2 isthmus, left and right).
PART_VALUE: dict[Side, int] = {Side.LEFT: 5, Side.RIGHT: 6}


def pediculoisthmic_map(
    hu: npt.NDArray[np.floating],
    affine: npt.ArrayLike,
    findings: tuple[C2Finding, ...],
    settings: C2Settings | None = None,
    *,
    radius_mm: float = 6.0,
    half_length_mm: float = 6.0,
) -> npt.NDArray[np.uint8]:
    """A uint8 map on the grid of ``hu``: 5 = left component, 6 = right, 0 elsewhere."""
    settings = settings or C2Settings()
    affine = np.asarray(affine, dtype=np.float64)
    out = np.zeros(hu.shape, dtype=np.uint8)
    for finding in findings:
        box = _index_box(affine, np.asarray(finding.location_mm), radius_mm + half_length_mm, hu)
        if box is None:
            continue
        index = np.stack(np.meshgrid(*(np.arange(s.start, s.stop) for s in box), indexing="ij"))
        points = np.tensordot(affine[:3, :3], index, axes=1) + affine[:3, 3, None, None, None]
        offset = points - np.asarray(finding.location_mm)[:, None, None, None]
        axis = np.asarray(finding.axis_mm) / np.linalg.norm(finding.axis_mm)
        along = np.tensordot(axis, offset, axes=1)
        radial = np.linalg.norm(offset - axis[:, None, None, None] * along, axis=0)
        inside = (np.abs(along) <= half_length_mm) & (radial <= radius_mm)
        component = _connected_to_centre(inside & (hu[box] >= settings.bone_hu), radial, along)
        region = out[box]
        region[component & (region == 0)] = PART_VALUE[finding.side]
    return out


def _index_box(
    affine: npt.NDArray[np.float64],
    centre: npt.NDArray[np.float64],
    half_mm: float,
    hu: npt.NDArray[np.floating],
) -> tuple[slice, slice, slice] | None:
    """Index slices of the axis-aligned box (in LPS) of half size ``half_mm`` around ``centre``."""
    corners = centre + half_mm * np.array(
        [[x, y, z] for x in (-1, 1) for y in (-1, 1) for z in (-1, 1)], dtype=np.float64
    )
    index = (np.linalg.inv(affine) @ np.c_[corners, np.ones(8)].T)[:3]
    low = np.maximum(np.floor(index.min(axis=1)).astype(int), 0)
    high = np.minimum(np.ceil(index.max(axis=1)).astype(int) + 1, hu.shape)
    if np.any(high <= low):
        return None
    return (slice(low[0], high[0]), slice(low[1], high[1]), slice(low[2], high[2]))


def _connected_to_centre(
    mask: npt.NDArray[np.bool_], radial: npt.NDArray[np.float64], along: npt.NDArray[np.float64]
) -> npt.NDArray[np.bool_]:
    """The component of ``mask`` holding the bone voxel nearest the narrowest section's centre."""
    if not mask.any():
        return mask
    labels, _ = ndimage.label(mask)
    distance = np.where(mask, np.hypot(radial, along), np.inf)
    seed = np.unravel_index(int(np.argmin(distance)), mask.shape)
    result: npt.NDArray[np.bool_] = labels == labels[seed]
    return result

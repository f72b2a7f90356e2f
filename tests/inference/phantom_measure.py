"""Measurements on phantom label maps used by the phantom tests (LPS mm, [slice,row,col] arrays)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage


def smooth_mask(labels: npt.NDArray[np.uint8], label: int) -> npt.NDArray[np.float32]:
    """Binary mask of ``label`` blurred by one voxel: its 0.5 level is the sub-voxel surface."""
    return np.asarray(ndimage.gaussian_filter((labels == label).astype(np.float32), 1.0))


def sample(field: np.ndarray, affine: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Trilinear samples of ``field`` at LPS points ``pts`` (N, 3)."""
    idx = np.linalg.solve(affine, np.c_[pts, np.ones(len(pts))].T)[:3]
    return np.asarray(ndimage.map_coordinates(field, idx, order=1, mode="nearest"))


def chord(field: np.ndarray, affine: np.ndarray, centre: np.ndarray, u: np.ndarray) -> float:
    """Length (mm) of the inside run (field ≥ 0.5) through ``centre`` along unit ``u``."""
    step = 0.01
    t = np.arange(-20.0, 20.0, step)
    inside = sample(field, affine, centre[None] + t[:, None] * u[None]) >= 0.5
    i0 = len(t) // 2
    if not inside[i0]:
        return 0.0
    a = i0 - int(np.argmin(inside[i0::-1]))
    b = i0 + int(np.argmin(inside[i0:]))
    return float(t[b] - t[a])


def _section(
    field: np.ndarray, affine: np.ndarray, centre: np.ndarray, axis: np.ndarray, step: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """In-plane points (K, 2), LPS points (K, 3) and plane basis (2, 3) of the piece of the
    cross-section ⊥ ``axis`` through ``centre`` that holds ``centre``."""
    helper = np.array([0.0, 0.0, 1.0]) if abs(axis[2]) < 0.9 else np.array([1.0, 0.0, 0.0])
    e1 = np.cross(axis, helper)
    e1 /= np.linalg.norm(e1)
    e2 = np.cross(axis, e1)
    g = np.arange(-10.0, 10.0 + step / 2, step)
    uu, vv = np.meshgrid(g, g, indexing="ij")
    pts = centre[None] + uu.reshape(-1, 1) * e1[None] + vv.reshape(-1, 1) * e2[None]
    inside = (sample(field, affine, pts) >= 0.5).reshape(uu.shape)
    comps, _ = ndimage.label(inside)
    keep = comps == comps[len(g) // 2, len(g) // 2]
    xy = np.stack([uu[keep], vv[keep]], axis=1)
    return xy, pts[keep.reshape(-1)], np.stack([e1, e2])


def section_centroid(
    field: np.ndarray, affine: np.ndarray, centre: np.ndarray, axis: np.ndarray
) -> np.ndarray:
    """LPS centroid of the cross-section ⊥ ``axis`` through ``centre`` (0.1 mm sampling)."""
    _, pts, _ = _section(field, affine, centre, axis, 0.1)
    return np.asarray(pts.mean(axis=0))


def min_feret(field: np.ndarray, affine: np.ndarray, centre: np.ndarray, axis: np.ndarray) -> float:
    """Minimum caliper width (mm) of the cross-section ⊥ ``axis`` through ``centre``.

    The section is sampled on a 0.05 mm grid; only the connected piece holding ``centre`` counts.
    """
    step = 0.05
    xy, _, _ = _section(field, affine, centre, axis, step)
    angles = np.radians(np.arange(0.0, 180.0, 0.5))
    proj = xy @ np.stack([np.cos(angles), np.sin(angles)])
    return float((proj.max(axis=0) - proj.min(axis=0)).min() + step)

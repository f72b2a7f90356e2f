"""The pedicle's side walls and the line midway between them, which gives the pedicle's
transverse slope (PTA) (patient frame, LPS mm)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inference.geometry import FloatArray, Frame, VolumeSampler, unit
from inference.lumbar.sections import GRID_MM, run_from

WALL_HALF_MM = 12.0  # the pedicle's side walls are followed this far either side of the isthmus
WALL_REACH_MM = 18.0  # ... across the axis
WALL_BAND_MM = 4.5  # ... at heights within this of the axis
WALL_STEP_MM = 0.6  # a wall that moves more than this between planes 0.5 mm apart has met bone
WALL_MIN_MM = 4.0  # the walls' midline is fitted on at least this length


def _wall_runs(val: npt.NDArray[np.bool_], xs: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(lower, upper) ends (mm) of the runs of True around ``xs`` = 0 along the last axis of
    ``val``; NaN where 0 is outside, the end of ``xs`` where the run reaches it."""
    i0 = int(np.argmin(np.abs(xs)))
    before = ~val[..., :i0][..., ::-1]  # walking down from i0 - 1
    after = ~val[..., i0 + 1 :]  # walking up from i0 + 1
    lo_gap = np.where(before.any(axis=-1), np.argmax(before, axis=-1), i0)
    hi_gap = np.where(after.any(axis=-1), np.argmax(after, axis=-1), xs.size - 1 - i0)
    lo = xs[i0 - lo_gap]
    hi = xs[i0 + hi_gap]
    inside = val[..., i0]
    return np.where(inside, lo, np.nan), np.where(inside, hi, np.nan)


def wall_midline(
    inside: VolumeSampler, point: FloatArray, direction: FloatArray, frame: Frame
) -> tuple[FloatArray, FloatArray] | None:
    """(point, direction) of the line midway between the pedicle's medial and lateral walls.

    In the planes ⊥ ``direction`` every 0.5 mm within ±``WALL_HALF_MM`` of ``point``, the bone
    run through the axis along the transverse direction w = s × d (at the axis height and
    1 mm above and below, the mask interpolated and cut at 0.5) gives both walls; each is
    followed from the isthmus while it moves less than ``WALL_STEP_MM`` from plane to plane
    (beyond, the body, the lamina or a process has joined it), and the midpoints of that run
    are fitted by a line (at least ``WALL_MIN_MM`` long, else None). Unlike the section
    centroids, the midpoint is not pulled towards the side where the body joins a wide, short
    pedicle (L5) before the other wall does. The result lies in the transverse plane of
    ``direction`` (only its transverse slope is new); patient frame of ``inside``.
    """
    w = unit(np.cross(frame.s, direction))
    v = np.cross(direction, w)
    ts = np.arange(-WALL_HALF_MM, WALL_HALF_MM + 1e-9, GRID_MM)
    xs = np.arange(-WALL_REACH_MM, WALL_REACH_MM + 1e-9, 0.2)
    hs = np.arange(-WALL_BAND_MM, WALL_BAND_MM + 1e-9, GRID_MM)
    pts = (
        point
        + ts[:, None, None, None] * direction
        + hs[None, :, None, None] * v
        + xs[None, None, :, None] * w
    )
    val = inside(pts.reshape(-1, 3), order=1).reshape(ts.size, hs.size, xs.size) > 0.5
    lo_all, hi_all = _wall_runs(val, xs)
    lo, hi = lo_all.mean(axis=1), hi_all.mean(axis=1)
    ok = np.isfinite(lo) & (lo > xs[0] + 1.0) & (hi < xs[-1] - 1.0)
    k = ts.size // 2
    if not ok[k]:
        return None
    steady = np.ones(ts.size, dtype=bool)
    steady[1:] = (np.abs(np.diff(lo)) <= WALL_STEP_MM) & (np.abs(np.diff(hi)) <= WALL_STEP_MM)
    run = run_from(ok, k) & _steady_span(steady, k)
    if np.ptp(ts[run]) < WALL_MIN_MM:
        return None
    mid = (lo[run] + hi[run]) / 2
    slope, offset = np.polyfit(ts[run], mid, 1)
    return point + offset * w, unit(direction + slope * w)


def _steady_span(steady: npt.NDArray[np.bool_], k: int) -> npt.NDArray[np.bool_]:
    """Indices reachable from ``k`` through steps flagged ``steady`` (``steady[i]``: the step
    from i − 1 to i)."""
    out = np.zeros(steady.size, dtype=bool)
    out[k] = True
    i = k
    while i + 1 < steady.size and steady[i + 1]:
        i += 1
        out[i] = True
    i = k
    while i > 0 and steady[i]:
        i -= 1
        out[i] = True
    return out

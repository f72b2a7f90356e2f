"""Pedicle isthmus search and the channel along the pedicle axis.

Patient frame (LPS mm). A vertebra is given as a 0/1 sampler of its mask and its anatomy (frame,
body walls). The pedicle axis is found as in ``ALGORITHMS.md``: a first guess from the pedicle's
coronal cross-section behind the body, then planes ⊥ the axis every 0.5 mm; the isthmus is the
smallest cross-section and the axis is refitted through the section centroids around it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from inference.errors import InferenceError
from inference.geometry import (
    FloatArray,
    Frame,
    SignedDistance,
    VolumeSampler,
    perpendicular_basis,
    ray_exit,
    unit,
)
from inference.lumbar.frames import VertebraAnatomy
from inference.lumbar.sections import GRID_MM, MIN_SECTION_MM2, run_from, section
from inference.lumbar.tracks import coronal_track, sacral_track
from inference.lumbar.walls import wall_midline
from inference.results import Side

MAX_OFFSET_MM = 2.5
NARROW = 1.5  # sections up to this × the isthmus area belong to the pedicle's narrow part
TRIM = 2.0  # centroids farther than this × the median from the line are refitted without
WIDE = 2.0  # ... and up to this × for the transverse slope (PTA), see centroid_line
SUBVOXEL_ORDER = 1  # centroid sections: the mask interpolated and cut at 0.5 (sub-voxel)
FIT_HALF_MM = 8.0  # the centroid line is fitted within this distance of the isthmus
PTA_AGREE_DEG = 6.0  # the centroid line's transverse slope (PTA) is kept when the corridor's agrees
# ... or when its narrow part was at least this long (mm): on cached e71bc04 masks (ours, seeds
# 1-8, 17) the two disagreed by > 6° at five pedicles: the fit 0.3-0.8° from the reference on
# 9-10 mm of narrow part (seed 6 L4 left, L5 right; seed 8 L5 left), the corridor 5.6-8.2° off;
# both off on the 2-3.5 mm narrow parts of seed 17's wide L5 pedicles
FIT_MIN_SPAN_MM = 6.0
FRONT_BACK_MM = 1.0  # the sagittal slope (PSA) from sections from this far behind the isthmus
FRONT_MIN = 9  # ... forward, at least this many (4 mm)
# The image PSA is weighed against the prior PSA ≈ 0 ± PSA_PRIOR_DEG (relative to the endplates)
# by the grid's step along s: the pedicle's roof and floor are stairs of the slice step over a
# 5-8 mm narrow part (cached 9082faa masks, ours, L1-L5: the median estimate's mean |ΔPSA| 1.05 /
# 1.80 / 2.82° at 1 / 2 / 3 mm, the prior's 1.8-3.0°): error PSA_DEG_PER_MM × step_mm
PSA_PRIOR_DEG = 3.0
PSA_DEG_PER_MM = 1.0
# ... unless the drawn axis has this much less room at the isthmus ± 3 mm than the image's (the
# real CT's 3 mm slices, TS v2's labels: L4 right GR B 0.38 mm on the drawn axis, A without)
PRIOR_GIVE_MM = 0.25


@dataclass(frozen=True, slots=True)
class Channel:
    """The pedicle axis of one side and the bone channel along it (patient mm)."""

    isthmus: FloatArray
    direction: FloatArray
    entry: FloatArray
    exit: FloatArray
    isthmus_area_mm2: float
    radius_mm: float

    @property
    def length(self) -> float:
        return float(np.linalg.norm(self.exit - self.entry))


def _component_at(image: np.ndarray, reach_px: int = 6) -> tuple[np.ndarray, bool]:
    """The connected component nearest the image centre (within ``reach_px``), and found-flag."""
    labels, n = ndimage.label(image)
    c = image.shape[0] // 2
    if n == 0:
        return image, False
    window = labels[c - reach_px : c + reach_px + 1, c - reach_px : c + reach_px + 1]
    if labels[c, c]:
        return labels == labels[c, c], True
    ids = window[window > 0]
    if ids.size == 0:
        return labels == -1, False
    return labels == np.bincount(ids).argmax(), True


def _profile(
    inside: VolumeSampler,
    point: FloatArray,
    direction: FloatArray,
    max_offset: float = 2.5,
    order: int = 0,
) -> tuple[FloatArray, FloatArray, FloatArray]:
    """Areas and centroids of the axis-connected sections ⊥ ``direction`` around ``point``
    (``order`` 1: the mask interpolated and cut at 0.5, a sub-voxel outline)."""
    u, v = perpendicular_basis(direction)
    ts = np.arange(-12.0, 12.0 + 1e-9, GRID_MM)
    areas = np.full(ts.size, np.inf)
    cents = np.zeros((ts.size, 3))
    half = 14.0
    g = np.arange(-half, half + 1e-9, GRID_MM)
    for i, t in enumerate(ts):
        centre = point + t * direction
        comp, found = _component_at(section(inside, centre, u, v, half, order=order))
        if not found:
            continue
        rows, cols = np.nonzero(comp)
        if rows.size * GRID_MM**2 < MIN_SECTION_MM2:  # a sliver at the end of the bone
            continue
        touches = rows.min() == 0 or cols.min() == 0 or rows.max() == g.size - 1
        offset = np.hypot(g[cols].mean(), g[rows].mean())
        if offset > max_offset:  # a section cut off-axis (end of a bone run): not the pedicle
            continue
        areas[i] = comp.sum() * GRID_MM**2 * (4.0 if touches else 1.0)
        cents[i] = centre + g[cols].mean() * u + g[rows].mean() * v
    return ts, areas, cents


def axis_clearance(inside: VolumeSampler, point: FloatArray, direction: FloatArray) -> float:
    """Smallest in-plane distance from the axis to the bone border over the isthmus ± 3 mm (the
    room a screw on this axis has), from 0.5 mm sections."""
    u, v = perpendicular_basis(direction)
    half = 14.0
    c = round(half / GRID_MM)
    best = np.inf
    for t in np.arange(-3.0, 3.0 + 1e-9, GRID_MM):
        img = section(inside, point + t * direction, u, v, half)
        if not img[c, c]:
            return 0.0
        dist = ndimage.distance_transform_edt(img, sampling=GRID_MM)
        best = min(best, float(dist[c, c]) - GRID_MM / 2)
    return float(best)


def _run_around_seed(areas: FloatArray) -> FloatArray:
    """Only the contiguous run of valid sections that contains (or is nearest) the seed (the
    middle of the profile); isolated slivers elsewhere along the axis are dropped."""
    valid = np.isfinite(areas)
    if not valid.any():
        return areas
    mid = areas.size // 2
    idx = np.nonzero(valid)[0]
    start = int(idx[np.argmin(np.abs(idx - mid))])
    lo = start
    while lo > 0 and valid[lo - 1]:
        lo -= 1
    hi = start
    while hi < areas.size - 1 and valid[hi + 1]:
        hi += 1
    out = np.full_like(areas, np.inf)
    out[lo : hi + 1] = areas[lo : hi + 1]
    return out


def _cone(direction: FloatArray, half_deg: float, step_deg: float) -> FloatArray:
    """Unit directions within ±``half_deg`` of ``direction`` on a two-angle grid."""
    u, v = perpendicular_basis(direction)
    g = np.tan(np.radians(np.arange(-half_deg, half_deg + 1e-9, step_deg)))
    d = direction + g[:, None, None] * u + g[None, :, None] * v
    d = d.reshape(-1, 3)
    out: FloatArray = d / np.linalg.norm(d, axis=1, keepdims=True)
    return out


def corridor_axis(
    phi: SignedDistance, point: FloatArray, direction: FloatArray, half_deg: float = 20.0
) -> FloatArray:
    """The direction through ``point`` within ``half_deg`` of ``direction`` that keeps the line
    farthest inside the bone along the pedicle (mean clearance −φ over −5…+8 mm, capped so the
    roomy body does not dominate)."""
    t = np.arange(-5.0, 8.0 + 1e-9, 0.5)  # posteriorly the pedicle merges with the processes
    cap = max(2.0, float(-phi(point[None, :])[0]) + 3.0)
    best = unit(direction)
    for half, step in ((half_deg, min(2.0, half_deg / 2)), (2.5, 0.5)):
        dirs = _cone(best, half, step)
        pts = point + t[None, :, None] * dirs[:, None, :]
        clear = np.minimum(-phi(pts.reshape(-1, 3)).reshape(dirs.shape[0], t.size), cap)
        best = dirs[int(np.argmax(clear.mean(axis=1)))]
    return best


def centroid_line(
    inside: VolumeSampler,
    point: FloatArray,
    direction: FloatArray,
    frame: Frame | None = None,
) -> tuple[FloatArray, FloatArray, float, float]:
    """(isthmus centroid, unit axis, isthmus area mm², fitted length mm): sections ⊥
    ``direction`` around ``point``; the isthmus is the smallest of the contiguous pedicle run
    and the axis the line fitted through the centroids of the narrow part around it (area <
    ``NARROW`` × the isthmus, within ±``FIT_HALF_MM``), where the pedicle is a tube of its own,
    clear of the body and the processes. The centroids follow the medial and lateral walls (and
    the upper and lower), so the axis is the pedicle's, not merely one that clears its narrowest
    wall. With ``frame`` (the vertebra's), the transverse slope (PTA) comes from the longer run
    up to ``WIDE`` × the isthmus: the side walls stay clear of the body and the lamina longer
    than the top and bottom stay clear of the body and the articular processes; the side
    walls' midline (:func:`wall_midline`) where it is found. The sagittal slope (PSA) comes
    from the narrow part's sections from ``FRONT_BACK_MM`` behind the isthmus forward: behind
    it the pedicle's floor and roof meet the lamina and the articular processes, and our masks
    hold more bone there than the truth (sections along the true axis 2-5 mm behind the
    isthmus 7-23 % larger and their centroids 0.14-0.32 mm lower, medians over seeds
    1,2,3,4,5,7,8,10), which tilted the whole narrow part's line by +4.0° in PSA on average
    (+0.3° on the true masks); in front of it our sections match the truth's."""
    ts, areas, cents = _profile(inside, point, direction, order=SUBVOXEL_ORDER)
    areas = _run_around_seed(areas)
    if not np.isfinite(areas).any():
        raise InferenceError("pedicle lost while searching the isthmus")
    k = int(np.argmin(areas))
    near = np.abs(ts - ts[k]) <= FIT_HALF_MM
    narrow = run_from(areas < NARROW * areas[k], k) & near
    span = float(np.ptp(ts[narrow]))
    if narrow.sum() < 5:
        return cents[k], direction, float(areas[k]), span
    centre, axis = _line_through(cents[narrow], direction)
    foot = centre + ((cents[k] - centre) @ axis) * axis
    if frame is None:
        return foot, axis, float(areas[k]), span
    transverse = sagittal = axis
    walls = wall_midline(inside, foot, axis, frame)
    if walls is not None:
        foot, transverse = walls
    else:
        wide = run_from(areas < WIDE * areas[k], k) & near
        if wide.sum() > narrow.sum():
            _, transverse = _line_through(cents[wide], direction)
    front = narrow & (ts >= ts[k] - FRONT_BACK_MM)
    if front.sum() >= FRONT_MIN:
        _, sagittal = _line_through(cents[front], direction)
    axis = unit(
        frame.a
        + (transverse @ frame.r) / (transverse @ frame.a) * frame.r
        + (sagittal @ frame.s) / (sagittal @ frame.a) * frame.s
    )
    return foot, axis, float(areas[k]), span


def _line_through(pts: FloatArray, direction: FloatArray) -> tuple[FloatArray, FloatArray]:
    """(centroid, unit direction ≈ ``direction``) of the least-squares line through ``pts``,
    refitted without the points farther than ``TRIM`` × the median distance from it (sections
    at the ends of a run that already hold part of the body or a process)."""
    keep = np.ones(pts.shape[0], dtype=bool)
    for _ in range(3):
        centre = pts[keep].mean(axis=0)
        axis = unit(np.linalg.svd(pts[keep] - centre, full_matrices=False)[2][0])
        off = pts - centre
        dist = np.linalg.norm(off - np.outer(off @ axis, axis), axis=1)
        keep = dist <= max(0.1, TRIM * float(np.median(dist)))
        if keep.sum() < 5:
            break
    return centre, axis if axis @ direction > 0 else -axis


def pedicle_axis(
    inside: VolumeSampler,
    phi: SignedDistance,
    anatomy: VertebraAnatomy,
    side: Side,
    sacral: bool = False,
) -> tuple[FloatArray, FloatArray, float]:
    """(isthmus centroid, unit axis pointing anterior, isthmus area mm²) of the pedicle.

    Start from the coronal track (``sacral``: the S1 track and prior). Two estimates, each
    alternating with the isthmus (smallest section ⊥ the axis in the contiguous pedicle run):
    the line through the section centroids of the pedicle's narrow part (:func:`centroid_line`)
    and the widest corridor through the isthmus centroid (:func:`corridor_axis`). The centroid
    line follows the pedicle's walls, while the corridor is blind to tilts along the pedicle's
    long section axis (a tall pedicle leaves room above and below): :func:`_combine` keeps the
    centroid line's PTA with the median of the two PSAs and 0°; where the PTAs disagree the
    narrow part was too short for a stable fit (wide L5 pedicles) and the corridor is kept.
    S1: the isthmus on the S1 track along the S1 axis of :func:`sacral_track`, no corridor
    search: the S1 pedicle merges with the ala, so the roomiest direction is the ala's, not the
    pedicle's (a ±5° search around the prior sat at its edges).
    """
    if sacral:
        point, direction = sacral_track(inside, anatomy, side)
        return _isthmus_along(inside, point, direction)
    start = coronal_track(inside, anatomy, side)
    corridor = _corridor_loop(inside, phi, anatomy, start)
    try:
        fitted, span = _centroid_loop(inside, anatomy, start)
    except InferenceError:
        return psa_toward_prior(anatomy.frame, corridor, anatomy.step_mm)
    combined = _combine(anatomy.frame, fitted, corridor, span)
    drawn = psa_toward_prior(anatomy.frame, combined, anatomy.step_mm)
    if drawn[1] @ combined[1] > 1.0 - 1e-9:
        return combined
    # the prior moves the axis only within the room the pedicle leaves it
    room = axis_clearance(inside, combined[0], combined[1]) - PRIOR_GIVE_MM
    return drawn if axis_clearance(inside, drawn[0], drawn[1]) >= room else combined


def psa_toward_prior(
    frame: Frame, axis: tuple[FloatArray, FloatArray, float], step_mm: float
) -> tuple[FloatArray, FloatArray, float]:
    """``axis`` (isthmus, direction, area) with its PSA's tangent in ``frame`` times σp² / (σp² +
    σi²), σp = ``PSA_PRIOR_DEG``, σi = ``PSA_DEG_PER_MM`` × ``step_mm`` (0.9 on 1 mm slices, 0.5
    on 3 mm ones; ``step_mm`` 0, grid unknown: 1); the PTA is kept."""
    point, direction, area = axis
    noise = PSA_DEG_PER_MM * step_mm
    weight = PSA_PRIOR_DEG**2 / (PSA_PRIOR_DEG**2 + noise**2)
    forward = direction @ frame.a
    transverse = (direction @ frame.r) / forward
    sagittal = weight * (direction @ frame.s) / forward
    return point, unit(frame.a + transverse * frame.r + sagittal * frame.s), area


def _combine(
    frame: Frame,
    fitted: tuple[FloatArray, FloatArray, float],
    corridor: tuple[FloatArray, FloatArray, float],
    span_mm: float = 0.0,
) -> tuple[FloatArray, FloatArray, float]:
    """The centroid line's isthmus and transverse slope (PTA) with PSA = the median of its
    sagittal angle, the corridor's and 0° (PSA ≈ 0 relative to the endplate, ALGORITHMS.md):
    in a short, tall pedicle each image estimate is noisy (mean |ΔPSA| 1.5 and 1.7° on the
    true masks of seeds 1,2,3,4,5,7,8,10) but they err independently, so the median of the
    three is kept even where the two agree within a few degrees. Where the transverse slopes
    differ by more than ``PTA_AGREE_DEG`` and the centroid line's narrow part (``span_mm``)
    was shorter than ``FIT_MIN_SPAN_MM``, too short for a stable fit (wide L5 pedicles): the
    corridor."""
    f_dir, c_dir = fitted[1], corridor[1]
    tr_f, tr_c = (f_dir @ frame.r) / (f_dir @ frame.a), (c_dir @ frame.r) / (c_dir @ frame.a)
    disagree = abs(np.degrees(np.arctan(tr_f) - np.arctan(tr_c))) > PTA_AGREE_DEG
    if disagree and span_mm < FIT_MIN_SPAN_MM:
        return corridor
    psa = np.median([np.arctan((d @ frame.s) / (d @ frame.a)) for d in (f_dir, c_dir)] + [0.0])
    direction = unit(frame.a + tr_f * frame.r + np.tan(psa) * frame.s)
    return fitted[0], direction, fitted[2]


def _centroid_loop(
    inside: VolumeSampler, anatomy: VertebraAnatomy, start: tuple[FloatArray, FloatArray]
) -> tuple[tuple[FloatArray, FloatArray, float], float]:
    """Alternate isthmus and centroid-line fit (see :func:`centroid_line`) from ``start``;
    returns the axis and the length (mm) of the narrow part it was fitted on."""
    point, direction = start
    area, span = float("nan"), 0.0
    frame = anatomy.frame if WIDE > NARROW else None
    for _ in range(4):
        point, direction, area, span = centroid_line(inside, point, direction, frame)
        if direction @ anatomy.frame.a < 0:
            direction = -direction
    return (point, direction, area), span


def _isthmus_along(
    inside: VolumeSampler, point: FloatArray, direction: FloatArray
) -> tuple[FloatArray, FloatArray, float]:
    """(centroid, ``direction``, area mm²) of the smallest section ⊥ ``direction`` in the
    contiguous bone run around ``point``."""
    _, areas, cents = _profile(inside, point, direction)
    areas = _run_around_seed(areas)
    if not np.isfinite(areas).any():
        raise InferenceError("pedicle lost while searching the isthmus")
    k = int(np.argmin(areas))
    return cents[k], direction, float(areas[k])


def _corridor_loop(
    inside: VolumeSampler,
    phi: SignedDistance,
    anatomy: VertebraAnatomy,
    start: tuple[FloatArray, FloatArray],
) -> tuple[FloatArray, FloatArray, float]:
    """Alternate isthmus (smallest section ⊥ the axis) and widest corridor through it
    (within ±20°)."""
    point, direction = start
    area = float("nan")
    for _ in range(3):
        point, direction, area = _isthmus_along(inside, point, direction)
        direction = corridor_axis(phi, point, direction, 20.0)
        if direction @ anatomy.frame.a < 0:
            direction = -direction
    return point, direction, area


def channel(
    inside: VolumeSampler,
    phi: SignedDistance,
    anatomy: VertebraAnatomy,
    side: Side,
    sacral: bool = False,
) -> Channel:
    """The pedicle axis and its bone channel: entry = first bone crossing from posterior, exit =
    where the axis leaves the anterior body cortex (``sacral``: S1, see :func:`pedicle_axis`)."""
    point, direction, area = pedicle_axis(inside, phi, anatomy, side, sacral)
    return channel_along(inside, point, direction, area)


def channel_along(
    inside: VolumeSampler, point: FloatArray, direction: FloatArray, area: float
) -> Channel:
    """The bone channel of the axis through the isthmus ``point`` along ``direction``."""
    back = ray_exit(inside, point, -direction, 80.0, 0.25)
    front = ray_exit(inside, point, direction, 120.0, 0.25)
    return Channel(
        isthmus=point,
        direction=direction,
        entry=point - back * direction,
        exit=point + front * direction,
        isthmus_area_mm2=area,
        radius_mm=axis_clearance(inside, point, direction),
    )

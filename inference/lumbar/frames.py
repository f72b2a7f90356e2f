"""Vertebra frames from the endplates, and screw angles measured in them.

Patient frame: DICOM LPS mm (any right-handed patient frame works: ``r = a × s`` is patient right
in LPS and RAS alike). A vertebra frame has ``s`` = cranial endplate normal (bisector of the
superior and inferior endplate normals), ``a`` = spinal canal → body centroid made ⊥ s,
``r = a × s``.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from inference.geometry import BoolArray, FloatArray, Frame, index_to_mm, orthonormal_frame, unit
from inference.lumbar.body import extract_body
from inference.results import Side


@dataclass(frozen=True, slots=True)
class VertebraAnatomy:
    """The frame of one vertebra (origin = body centroid) and its body's extent along ``a``.

    ``body_back_mm`` / ``body_front_mm`` are the local ``a`` coordinates of the posterior and
    anterior body walls (mid-height, near the midline). ``endplate_spread_deg``: the angle
    between the superior and inferior endplate normals (0 where only one was fitted);
    ``endplate_normals``: those two unit normals (superior, inferior; empty where only one was
    fitted). ``step_mm``: the input grid's sampling step along ``s`` (the largest voxel side's
    share of ``s``, :func:`sampling_step`: the slice spacing on axial slices), 0 where unknown:
    how coarsely the image resolves heights along ``s`` (the pedicle's roof and floor).
    """

    frame: Frame
    body: BoolArray
    body_back_mm: float
    body_front_mm: float
    endplate_spread_deg: float = 0.0
    endplate_normals: tuple[FloatArray, ...] = ()
    step_mm: float = 0.0


def sampling_step(affine: npt.ArrayLike, s: npt.ArrayLike) -> float:
    """The sampling step (mm) along the unit direction ``s`` of the grid of ``affine`` (index →
    patient mm): the largest of each voxel side's length times its share of ``s``
    (``spacing_i · |e_i · s|``): the slice spacing, nearly, for an axial stack and a vertebra
    tilted a few degrees."""
    cols = np.asarray(affine, dtype=np.float64)[:3, :3]
    return float(np.max(np.abs(cols.T @ unit(np.asarray(s, dtype=np.float64)))))


def medial_vector(frame: Frame, side: Side) -> FloatArray:
    """Unit vector pointing medially for a screw on ``side``: +r for left, −r for right."""
    return frame.r if side is Side.LEFT else -frame.r


def screw_angles(
    frame: Frame, entry: npt.ArrayLike, tip: npt.ArrayLike, side: Side
) -> tuple[float, float]:
    """(PTA, PSA) in degrees of the screw entry→tip, measured in the vertebra frame.

    PTA = atan2(d·m, d·a), positive = convergent (tip medial to entry);
    PSA = atan2(d·s, d·a), positive = tip cranial to entry.
    """
    d = unit(np.asarray(tip, dtype=np.float64) - np.asarray(entry, dtype=np.float64))
    m = medial_vector(frame, side)
    pta = float(np.degrees(np.arctan2(d @ m, d @ frame.a)))
    psa = float(np.degrees(np.arctan2(d @ frame.s, d @ frame.a)))
    return pta, psa


def direction_from_angles(frame: Frame, pta_deg: float, psa_deg: float, side: Side) -> FloatArray:
    """The unit screw direction with the given PTA and PSA in ``frame`` (see screw_angles)."""
    m = medial_vector(frame, side)
    d = frame.a + np.tan(np.radians(pta_deg)) * m + np.tan(np.radians(psa_deg)) * frame.s
    return unit(d)


def _cell_ids(u: FloatArray, v: FloatArray) -> npt.NDArray[np.int64]:
    """2 mm × 2 mm cell id of in-plane coordinates (mm)."""
    return np.floor(u / 2.0).astype(np.int64) * 100003 + np.floor(v / 2.0).astype(np.int64)


def _column_tops(cell: npt.NDArray[np.int64], h: FloatArray) -> npt.NDArray[np.intp]:
    """Index of the highest ``h`` in each cell."""
    order = np.lexsort((-h, cell))
    first = np.ones(order.size, dtype=bool)
    first[1:] = cell[order][1:] != cell[order][:-1]
    return order[first]


def _endplate_normal(
    points: FloatArray, s0: FloatArray, superior: bool, surface: FloatArray | None = None
) -> FloatArray:
    """Normal (≈ s0) of a plane fitted to the top (or bottom) surface of the body.

    ``points`` (the opened body) choose the central columns; the surface height in each column
    is taken from ``surface`` (the whole vertebra mask's points), up to 3 mm above the body's
    top there: the opening rounds the body's corners by its radius, unevenly front to back,
    which would tilt the plane.
    """
    u1 = unit(np.cross(s0, [1.0, 0.0, 0.0] if abs(s0[0]) < 0.9 else [0.0, 1.0, 0.0]))
    u2 = np.cross(s0, u1)
    sign = 1.0 if superior else -1.0
    c = points.mean(axis=0)
    u, v, h = (points - c) @ u1, (points - c) @ u2, sign * ((points - c) @ s0)
    radius = np.hypot(u, v)
    keep = radius < 0.6 * np.percentile(radius, 95)
    cell = _cell_ids(u[keep], v[keep])
    top = _column_tops(cell, h[keep])
    cells, heights = cell[top], h[keep][top]
    if surface is not None and surface.shape[0] > 0:
        su, sv, sh = (surface - c) @ u1, (surface - c) @ u2, sign * ((surface - c) @ s0)
        scell = _cell_ids(su, sv)
        at = np.clip(np.searchsorted(cells, scell), 0, cells.size - 1)
        ok = (cells[at] == scell) & (sh >= heights[at]) & (sh <= heights[at] + 3.0)
        stop = _column_tops(scell[ok], sh[ok])
        picked = surface[ok][stop]
    else:
        picked = points[keep][top]
    if picked.shape[0] < 6:
        return s0
    q = picked - c
    design = np.column_stack([q @ u1, q @ u2, np.ones(q.shape[0])])
    target = q @ s0
    good = np.ones(q.shape[0], dtype=bool)
    for _ in range(3):  # trim cells whose top point is not on the endplate (rim, cut cells)
        coef, *_ = np.linalg.lstsq(design[good], target[good], rcond=None)
        residual = np.abs(design @ coef - target)
        good = residual <= max(1.0, float(np.percentile(residual, 75)))
    return unit(s0 - coef[0] * u1 - coef[1] * u2)


def vertebra_anatomy(
    mask: BoolArray,
    affine: npt.ArrayLike,
    cranial_hint: npt.ArrayLike,
    anterior_hint: npt.ArrayLike,
    *,
    superior_only: bool = False,
    native_affine: npt.ArrayLike | None = None,
) -> VertebraAnatomy:
    """The frame of the vertebra ``mask`` (patient frame of ``affine``).

    ``cranial_hint`` (e.g. the local spine tangent) and ``anterior_hint`` only fix signs and seed
    the endplate fit; the result comes from the endplates and the canal → body direction.
    ``superior_only`` (S1: fused below) uses the superior endplate alone. ``native_affine``: the
    input's grid (the mask may be resampled), which sets ``step_mm`` (0 without it).
    """
    aff = np.asarray(affine, dtype=np.float64)
    spacing = np.linalg.norm(aff[:3, :3], axis=0)
    body = extract_body(mask, spacing)
    pts = index_to_mm(aff, np.argwhere(body))
    rest = index_to_mm(aff, np.argwhere(mask & ~body))
    # S1 (superior_only) keeps the opened body's surface: on segmented phantoms the whole-mask
    # surface put 3 more S1 screws at GR B (bench_lumbar seeds 1,2,3,4,5,7,8,10)
    surface = None if superior_only else np.concatenate([pts, rest])
    centroid = pts.mean(axis=0)
    s = unit(cranial_hint)
    spread = 0.0
    normals: tuple[FloatArray, ...] = ()
    for _ in range(3):
        n_sup = _endplate_normal(pts, s, superior=True, surface=surface)
        if superior_only:
            s = n_sup
            continue
        n_inf = _endplate_normal(pts, s, superior=False, surface=surface)
        s = unit(n_sup + n_inf)
        spread = _angle_deg(n_sup, n_inf)
        normals = (n_sup, n_inf)
    if rest.shape[0] > 0:
        anterior = centroid - rest.mean(axis=0)
        if np.dot(anterior, anterior_hint) < 0:
            anterior = np.asarray(anterior_hint, dtype=np.float64)
    else:
        anterior = np.asarray(anterior_hint, dtype=np.float64)
    frame = orthonormal_frame(centroid, anterior, s)
    local = frame.to_local(pts)
    central = (np.abs(local[:, 0]) < 6.0) & (np.abs(local[:, 2]) < 6.0)
    sel = local[central] if central.sum() > 10 else local
    return VertebraAnatomy(
        frame=frame,
        body=body,
        body_back_mm=float(np.percentile(sel[:, 1], 1)),
        body_front_mm=float(np.percentile(sel[:, 1], 99)),
        endplate_spread_deg=spread,
        endplate_normals=normals,
        step_mm=0.0 if native_affine is None else sampling_step(native_affine, frame.s),
    )


# Segmental lordosis between consecutive levels, degrees [src: Sci Rep 2022,
# s41598-022-21840-x; ALGORITHMS.md]: the share of the tilt between two neighbours that falls on
# each side of the level between them.
SEGMENTAL_LORDOSIS_DEG = {
    ("L1", "L2"): 1.0,
    ("L2", "L3"): 6.0,
    ("L3", "L4"): 9.0,
    ("L4", "L5"): 13.0,
    ("L5", "S1"): 22.0,
}
NEIGHBOUR_AGREE_DEG = 4.0  # a frame farther than this from its neighbours' interpolation is off
PAIR_AGREE_DEG = 2.5  # ... unless one neighbour is this close to the table's lordosis from it


def _angle_deg(u: FloatArray, v: FloatArray) -> float:
    return float(np.degrees(np.arccos(np.clip(float(u @ v), -1.0, 1.0))))


def _slerp(u: FloatArray, v: FloatArray, t: float) -> FloatArray:
    """The unit vector a fraction ``t`` of the way from ``u`` to ``v`` on the great circle."""
    omega = np.arccos(np.clip(float(u @ v), -1.0, 1.0))
    if omega < 1e-9:
        return u
    return unit(np.sin((1.0 - t) * omega) * u + np.sin(t * omega) * v)


def neighbour_superior(
    above: str, level: str, below: str, s_above: FloatArray, s_below: FloatArray
) -> FloatArray:
    """The superior axis of ``level`` expected from the levels above and below it: their axes
    interpolated in proportion to the segmental lordosis on either side (equal shares where
    the table has no figure, e.g. an L6)."""
    upper = SEGMENTAL_LORDOSIS_DEG.get((above, level))
    lower = SEGMENTAL_LORDOSIS_DEG.get((level, below))
    share = 0.5 if upper is None or lower is None else upper / (upper + lower)
    return _slerp(unit(s_above), unit(s_below), share)


def _consecutive(levels: list[str], k: int, spine: tuple[str, ...]) -> bool:
    """Are ``levels[k - 1]``, ``levels[k]``, ``levels[k + 1]`` next to each other in ``spine``
    (all levels found, cranial → caudal, e.g. with an L6 that is not planned)?"""
    if not all(lv in spine for lv in levels[k - 1 : k + 2]):
        return False
    i = [spine.index(lv) for lv in levels[k - 1 : k + 2]]
    return i[1] - i[0] == 1 and i[2] - i[1] == 1


def _apart_from_both(levels: list[str], out: list[VertebraAnatomy], k: int) -> bool:
    """Does level ``k``'s superior axis differ from each neighbour's by more than
    ``PAIR_AGREE_DEG`` beyond the table's segmental lordosis? A frame that agrees with one
    neighbour is kept: the other one may be the wrong one (an end level is checked on its own
    terms, :func:`_check_ends`)."""
    for j in (k - 1, k + 1):
        pair = (levels[min(j, k)], levels[max(j, k)])
        expected = SEGMENTAL_LORDOSIS_DEG.get(pair)
        if expected is None:
            continue
        if abs(_angle_deg(out[k].frame.s, out[j].frame.s) - expected) <= PAIR_AGREE_DEG:
            return False
    return True


def check_frames(
    levels: list[str], anatomies: list[VertebraAnatomy], spine: tuple[str, ...]
) -> tuple[list[VertebraAnatomy], list[str]]:
    """Frames that agree with their neighbours, and a warning for each one that did not.

    ``levels`` run cranial → caudal with their ``anatomies``; ``spine`` is every level found
    (cranial → caudal). A level whose neighbours in ``spine`` both have a frame (S1 excepted:
    its own superior endplate) and whose superior axis lies more than ``NEIGHBOUR_AGREE_DEG``
    from :func:`neighbour_superior` of theirs (an endplate fit thrown by 3 mm slices or a faint
    osteoporotic shell; on 12 bench phantoms, our masks, frames within 2.2° of the truth lay
    ≤ 3.3° from it except beside a wrong one, and wrong ones 6–9° off 4.2–10.1°) gets that
    axis instead, the worst first, one at a time, so that one bad frame does not condemn its
    neighbours, and only where it is apart from both neighbours (:func:`_apart_from_both`:
    seed 11's L1, an end level, was 11° off and its right L2 and L3 were replaced). The body
    walls (``body_back_mm`` / ``body_front_mm``) are kept.
    """
    out = list(anatomies)
    warnings: list[str] = []
    fixed: set[int] = set()
    while True:
        worst, worst_k, worst_s = NEIGHBOUR_AGREE_DEG, -1, np.zeros(3)
        for k in range(1, len(out) - 1):
            if k in fixed or levels[k] == "S1" or not _consecutive(levels, k, spine):
                continue
            s = neighbour_superior(
                levels[k - 1], levels[k], levels[k + 1], out[k - 1].frame.s, out[k + 1].frame.s
            )
            off = _angle_deg(out[k].frame.s, s)
            if off > worst and _apart_from_both(levels, out, k):
                worst, worst_k, worst_s = off, k, s
        if worst_k < 0:
            out = _pick_endplates(levels, out, spine, fixed, warnings)
            return _check_ends(levels, out, spine, warnings)
        out[worst_k] = _with_superior(out[worst_k], worst_s)
        fixed.add(worst_k)
        warnings.append(
            f"{levels[worst_k]}: endplate frame {worst:.1f}° off its neighbours'; "
            f"interpolated from {levels[worst_k - 1]} and {levels[worst_k + 1]}"
        )


# An interior level whose endplates lie more than END_SPREAD_DEG apart takes the normal of the
# one endplate that lies within ENDPLATE_NEAR_DEG of its neighbours' interpolation where the
# other lies more than NEIGHBOUR_AGREE_DEG from it (a fit thrown by a narrowed disc): the
# bisector carried half the throw. On 20 bench phantoms (our masks; the endplates' normals
# against the true frame) four levels: seed 7 L4 (narrowed L4/L5 disc, 7.0° apart) 3.0 -> 0.6°
# off, seed 13 L5 3.4 -> 0.0°, seed 9 L5 1.3 -> 1.0°, seed 17 L4 1.4 -> 1.0°; with a 2° near
# limit seed 6's L2 too, 1.2 -> 2.8° (its endplates both 2.8-3.8° off)
ENDPLATE_NEAR_DEG = 1.5


def _pick_endplates(
    levels: list[str],
    anatomies: list[VertebraAnatomy],
    spine: tuple[str, ...],
    fixed: set[int],
    warnings: list[str],
) -> list[VertebraAnatomy]:
    """Interior levels with one endplate fit thrown take the other's normal (see
    ``ENDPLATE_NEAR_DEG``); levels already interpolated (``fixed``) are kept."""
    out = list(anatomies)
    for k in range(1, len(out) - 1):
        normals = out[k].endplate_normals
        if (
            k in fixed
            or len(normals) != 2
            or levels[k] == "S1"
            or out[k].endplate_spread_deg <= END_SPREAD_DEG
            or not _consecutive(levels, k, spine)
        ):
            continue
        s = neighbour_superior(
            levels[k - 1], levels[k], levels[k + 1], out[k - 1].frame.s, out[k + 1].frame.s
        )
        offs = [_angle_deg(n, s) for n in normals]
        near = int(np.argmin(offs))
        if offs[near] <= ENDPLATE_NEAR_DEG and offs[1 - near] > NEIGHBOUR_AGREE_DEG:
            out[k] = _with_superior(out[k], normals[near])
            warnings.append(
                f"{levels[k]}: endplates {out[k].endplate_spread_deg:.1f}° apart; the "
                f"{('superior', 'inferior')[near]} one, {offs[near]:.1f}° from its neighbours'"
                " frames, gives the frame"
            )
    return out


def _with_superior(old: VertebraAnatomy, s: FloatArray) -> VertebraAnatomy:
    """``old`` with its superior axis replaced by ``s`` (origin, anterior hint and walls kept)."""
    return dataclasses.replace(old, frame=orthonormal_frame(old.frame.origin, old.frame.a, s))


# An end level is checked only where its own endplates lie more than END_SPREAD_DEG apart (one
# fit thrown; the phantoms' endplates are parallel) and only at END_AGREE_DEG from the
# extrapolation (the near neighbour's own error enters it 1.2-2.4 times). On 20 bench phantoms
# (our masks, cached e71bc04 segmentations) L1 and L5 spreads were 0.1-7.6°; past 4° and 4°
# from the extrapolation two L1s: seed 18 (0.625 mm slices) 7.3° off the truth, its endplates
# 15.8° apart, 6.9° from the extrapolation (→ 0.6° off); seed 11 (3 mm) 2.3° off, 7.5° apart,
# 5.3° from an extrapolation thrown by its L2 (4.9° off): kept.
END_SPREAD_DEG = 4.0
END_AGREE_DEG = 6.0


def _end_neighbours(levels: list[str], k: int, spine: tuple[str, ...]) -> tuple[int, int] | None:
    """(near, far) indices of the two levels on the one side of end level ``k`` that has them
    (L1 with L2 and L3 below; L5 with L4 and L3 above when an unplanned L6 lies below it), all
    three next to each other in ``spine``; None for an interior level or S1."""
    if levels[k] == "S1" or levels[k] not in spine:
        return None
    at = spine.index(levels[k])
    for step in (1, -1):
        near, far = k + step, k + 2 * step
        other = k - step
        beside = 0 <= other < len(levels) and levels[other] in spine
        if beside and abs(spine.index(levels[other]) - at) == 1:
            continue  # the other side is in view: an interior level
        if not (0 <= far < len(levels)) or levels[near] == "S1" or levels[far] == "S1":
            continue
        if all(lv in spine for lv in (levels[near], levels[far])) and [
            spine.index(levels[near]) - at,
            spine.index(levels[far]) - at,
        ] == [step, 2 * step]:
            return near, far
    return None


def end_superior(
    pairs: tuple[tuple[str, str], tuple[str, str]], s_near: FloatArray, s_far: FloatArray
) -> FloatArray:
    """The superior axis of an end level extrapolated from its two neighbours on one side: the
    turn from the far one to the near one continued in proportion to the segmental lordosis
    of ``pairs`` (end level's segment, the neighbours' segment; cranial level first), the same
    turn again where the table has no figure."""
    seg_end = SEGMENTAL_LORDOSIS_DEG.get(pairs[0])
    seg_near = SEGMENTAL_LORDOSIS_DEG.get(pairs[1])
    ratio = 1.0 if seg_end is None or not seg_near else seg_end / seg_near
    return _slerp(unit(s_far), unit(s_near), 1.0 + ratio)


def _check_ends(
    levels: list[str],
    anatomies: list[VertebraAnatomy],
    spine: tuple[str, ...],
    warnings: list[str],
) -> tuple[list[VertebraAnatomy], list[str]]:
    """The end levels (no neighbour on one side, :func:`_end_neighbours`) checked after the
    interior ones: an end level whose own endplates lie more than ``END_SPREAD_DEG`` apart
    (one fit thrown) and whose superior axis lies more than ``END_AGREE_DEG`` from
    :func:`end_superior` of its neighbours takes that axis. An end level whose endplates agree
    is kept however far it is from the extrapolation: a neighbour's own error grows in it
    (seed 11's L2, 4.9° off the truth, put the extrapolation 5° from its L1, 2.3° off)."""
    out = list(anatomies)
    for k in range(len(out)):
        pair = _end_neighbours(levels, k, spine)
        if pair is None or out[k].endplate_spread_deg <= END_SPREAD_DEG:
            continue
        near, far = pair
        names = (levels[k], levels[near], levels[far])
        pairs = (names[:2], names[1:]) if near > k else ((names[1], names[0]), (names[2], names[1]))
        s = end_superior(pairs, out[near].frame.s, out[far].frame.s)
        off = _angle_deg(out[k].frame.s, s)
        if off <= END_AGREE_DEG:
            continue
        out[k] = _with_superior(out[k], s)
        warnings.append(
            f"{levels[k]}: endplate frame {off:.1f}° off its neighbours' (its endplates "
            f"{anatomies[k].endplate_spread_deg:.1f}° apart); extrapolated from {levels[near]} "
            f"and {levels[far]}"
        )
    return out, warnings

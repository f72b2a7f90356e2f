"""The pedicle's track in coronal planes behind the vertebral body: the first guess of the
pedicle axis (L1-L5 and S1) that the isthmus search starts from (patient frame, LPS mm)."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from inference.errors import InferenceError
from inference.geometry import FloatArray, VolumeSampler, unit
from inference.lumbar.frames import VertebraAnatomy
from inference.lumbar.sections import GRID_MM, MIN_SECTION_MM2, run_from, section
from inference.results import Side

S1_PTA_DEG = 35.0  # S1 pedicle axis ≈ 35–40° convergent, PSA ≈ 0 (Zindrick; ALGORITHMS.md)
LINK_MM = 4.0  # coronal pedicle sections in consecutive planes 0.5 mm apart: same track


def _coronal_candidates(
    inside: VolumeSampler, anatomy: VertebraAnatomy, depth: float, sign: float
) -> list[tuple[float, FloatArray]]:
    """(area, centre) of the bone sections on one side of the plane ⊥ a at ``depth`` mm behind
    the posterior body wall, near the pedicle's expected place."""
    f = anatomy.frame
    centre = f.origin + (anatomy.body_back_mm - depth) * f.a
    img = section(inside, centre, f.r, f.s, 40.0)
    labels, n = ndimage.label(img)
    if n == 0:
        return []
    g = np.arange(-40.0, 40.0 + 1e-9, GRID_MM)
    idx = ndimage.center_of_mass(img, labels, range(1, n + 1))
    area = ndimage.sum(img, labels, range(1, n + 1)) * GRID_MM**2
    out = []
    for (row, col), a_mm2 in zip(idx, area, strict=True):
        rr, ss = np.interp(col, np.arange(g.size), g), np.interp(row, np.arange(g.size), g)
        if sign * rr < 4.0 or sign * rr > 40.0 or abs(ss) > 10.0 or a_mm2 < MIN_SECTION_MM2:
            continue
        out.append((float(a_mm2), centre + rr * f.r + ss * f.s))
    return out


def coronal_track(
    inside: VolumeSampler, anatomy: VertebraAnatomy, side: Side
) -> tuple[FloatArray, FloatArray]:
    """(centre, unit axis pointing anterior) of the pedicle on ``side`` from its sections in
    coronal planes (⊥ a) 0.5–14 mm behind the body: the sections are linked from plane to plane
    into tracks (:func:`_link_tracks`) and the longest track is the pedicle (a fragment behind
    the body wall, such as the bulge of a body's lower rim in 3 mm slices, is a track of a plane
    or two); its centre is the smallest section, the axis the line through the section centres
    where the pedicle is narrow (area < 1.5 × minimum)."""
    f = anatomy.frame
    sign = -1.0 if side is Side.LEFT else 1.0  # r points to patient right
    depths = np.arange(0.5, 14.01, 0.5)
    per_depth = [_coronal_candidates(inside, anatomy, float(d), sign) for d in depths]
    best = pedicle_track(per_depth)
    if not best:
        raise InferenceError(f"no {side} pedicle found behind the vertebral body", str(side))
    areas = np.array([a for _, a, _ in best])
    cents = np.array([c for _, _, c in best])
    k = int(np.argmin(areas))
    run = run_from(areas < 1.5 * areas[k], k)
    if run.sum() < 4:
        return cents[k], unit(f.a)
    pts = cents[run]
    axis = np.linalg.svd(pts - pts.mean(axis=0), full_matrices=False)[2][0]
    return cents[k], unit(axis if axis @ f.a > 0 else -axis)


def pedicle_track(
    per_depth: list[list[tuple[float, FloatArray]]],
) -> list[tuple[int, float, FloatArray]]:
    """The pedicle's (plane index, area, centre) sections among the candidate sections of each
    coronal plane (area mm², centre): the longest track of :func:`_link_tracks`; among equally
    long ones the one that starts nearest the body, then the largest (the pedicle, not a
    process tip). Empty when there are no candidates."""
    tracks = _link_tracks(per_depth)
    if not tracks:
        return []
    return max(tracks, key=lambda t: (len(t), -t[0][0], sum(a for _, a, _ in t)))


def _link_tracks(
    per_depth: list[list[tuple[float, FloatArray]]],
) -> list[list[tuple[int, float, FloatArray]]]:
    """Tracks of (plane index, area, centre) through consecutive coronal planes: a section
    continues the track whose last section lies in the previous plane within ``LINK_MM`` of it
    (the nearest; one section per track and plane, the larger section first), else it starts a
    new track."""
    tracks: list[list[tuple[int, float, FloatArray]]] = []
    for i, cands in enumerate(per_depth):
        taken: set[int] = set()
        for a_mm2, c in sorted(cands, key=lambda ac: -ac[0]):
            open_ = [
                (float(np.linalg.norm(t[-1][2] - c)), j)
                for j, t in enumerate(tracks)
                if t[-1][0] == i - 1 and j not in taken
            ]
            near = [dj for dj in open_ if dj[0] <= LINK_MM]
            if near:
                j = min(near)[1]
                tracks[j].append((i, a_mm2, c))
            else:
                j = len(tracks)
                tracks.append([(i, a_mm2, c)])
            taken.add(j)
    return tracks


def sacral_track(
    inside: VolumeSampler, anatomy: VertebraAnatomy, side: Side
) -> tuple[FloatArray, FloatArray]:
    """(centre, unit axis pointing anterior) of the S1 pedicle on ``side``.

    The alae flank the S1 body and merge with the pedicle in coronal sections, so the largest
    section is the ala, not the pedicle: take the most medial bone section lateral to the canal
    in coronal planes 3–10 mm behind the body (the smallest of them), and the axis of the
    anatomical prior (PTA ``S1_PTA_DEG`` convergent, PSA 0 in the S1 frame).
    """
    f = anatomy.frame
    sign = -1.0 if side is Side.LEFT else 1.0  # r points to patient right
    best: tuple[float, FloatArray] | None = None
    for depth in np.arange(3.0, 10.01, 0.5):
        cands = _coronal_candidates(inside, anatomy, float(depth), sign)
        if not cands:
            continue
        a_mm2, c = min(cands, key=lambda ac: sign * float((ac[1] - f.origin) @ f.r))
        if best is None or a_mm2 < best[0]:
            best = (a_mm2, c)
    if best is None:
        raise InferenceError(f"no {side} S1 pedicle found behind the body", str(side))
    medial = -sign * unit(f.r)
    axis = unit(unit(f.a) + np.tan(np.radians(S1_PTA_DEG)) * medial)
    return best[1], axis

"""S1 screws: where the sacral axis is a prior (35° convergent, 0° in the S1 frame, not read from
the image), place it where our mask has room and size it by that room (patient frame, LPS mm).

The S1 "isthmus" of :func:`inference.lumbar.tracks.sacral_track` is a point on the S1 track, not a
narrowing: the pedicle merges with the ala and the body, so the isthmus sections' clearance that
sizes a lumbar screw says little here (0 mm where the point sits in a gap of our mask, and the
channel then 0.3 mm long: seeds 10 and 15 had no S1 screw on one side). An S1 screw is instead
moved parallel (same angles) to the nearest axis with the most room and given the largest
diameter whose thread keeps ``S1_MARGIN_MM`` of our mask's bone.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from inference.errors import InferenceError
from inference.geometry import FloatArray, perpendicular_basis
from inference.lumbar.catalogue import fit_diameter, snap_length
from inference.lumbar.draft import (
    Draft,
    VertebraModel,
    breaches,
    largest_clear,
    sized,
)
from inference.lumbar.isthmus import Channel, channel, channel_along
from inference.results import Side
from inference.settings import PlanningSettings

# how far (mm, ⊥ the axis, 1 mm grid) the S1 axis may move to find room
S1_SHIFT_MM = 10.0
S1_SHIFT_STEP_MM = 1.0
S1_CANDIDATES = 6  # moved axes sized in full (each costs a channel and up to 7 grader runs)
# where the track's own axis holds a screw in our mask, a moved axis whose entry lands farther than
# this from its entry has left the pedicle for another bone run
S1_ENTRY_MOVE_MM = 6.0
# the axis' room is measured from this far past the entry (the entry is on the surface)
ROOM_FROM_MM = 5.0
# bone our mask must keep around an S1 screw's thread (our working-grid masks are about 0.5 mm
# fatter than the truth at the pedicle walls: bench/safety_diagnosis.py)
S1_MARGIN_MM = 1.0

# An S1 screw that still leaves our mask once the sizes have run out (its axis is a prior, 35° /
# 0° in the S1 frame, not read from the image): the axis is tilted about the isthmus by REAIM_DEG,
# in REAIM_AZIMUTHS directions each, smallest tilt first. Not moved parallel: on seed 11 a 4-6 mm
# move found room in our mask where the true S1 has none (true GR B 0.9-1.5 mm, entry 14 mm off).
# L1-L5 axes are measured and keep their angles (the pair stays mirror-symmetric).
REAIM_DEG = (2.0, 4.0, 6.0)
REAIM_AZIMUTHS = 8


def _ring(direction: FloatArray) -> list[FloatArray]:
    """``REAIM_AZIMUTHS`` unit vectors perpendicular to ``direction``, evenly around it."""
    u1, u2 = perpendicular_basis(direction)
    th = 2.0 * np.pi * np.arange(REAIM_AZIMUTHS) / REAIM_AZIMUTHS
    return [np.cos(t) * u1 + np.sin(t) * u2 for t in th]


def _reaim_axes(ch: Channel) -> Iterator[list[tuple[FloatArray, FloatArray]]]:
    """Rings of (isthmus point, direction): the axis tilted about the isthmus by each of
    ``REAIM_DEG``, smallest tilt first."""
    ring = _ring(ch.direction)
    for deg in REAIM_DEG:
        c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
        yield [(ch.isthmus, c * ch.direction + s * u) for u in ring]


def reaim(model: VertebraModel, draft: Draft, settings: PlanningSettings) -> Draft:
    """An S1 screw that breaches our mask even at the catalogue's smallest sizes, re-aimed.

    Tried in rings of growing moves (:func:`_reaim_axes`); at the first ring where some axis
    holds a screw the grader passes on our mask, the largest such screw (diameter, then length)
    wins. Unchanged if the screw does not breach or nothing fits: screws that fit are never
    touched, so this costs no angle where it is not needed.
    """
    if model.level != "S1" or not breaches(model, draft, model.tolerance_mm, wall=True):
        return draft
    area = draft.channel.isthmus_area_mm2
    for ring in _reaim_axes(draft.channel):
        found: list[Draft] = []
        for point, d in ring:
            try:
                cand = sized(
                    model, draft.side, channel_along(model.inside, point, d, area), settings
                )
            except InferenceError:
                continue
            fit = largest_clear(model, cand, settings)
            if fit is not None:
                found.append(fit)
        if found:
            return max(found, key=lambda x: (x.diameter, x.length))
    return draft


def s1_draft(model: VertebraModel, side: Side, settings: PlanningSettings) -> Draft:
    """The S1 screw on ``side``: the prior axis through the S1 track, kept where our mask has
    room for it, else moved parallel to the best of the nearby axes with room
    (:func:`room_points`), each sized by its room (:func:`widest`): the largest diameter that
    keeps the margin, then the nearest.

    Raises :class:`InferenceError` when no S1 pedicle is found or no axis near it holds a screw.
    """
    ch = channel(model.inside, model.phi, model.anatomy, side, sacral=True)
    own = _fit(model, side, ch, settings)
    if own is not None and own[1]:
        return own[0]
    found = [own] if own is not None else []
    # where the track's own screw lies in our mask, moves stay near its entry
    clear = own is not None and not breaches(model, own[0], model.tolerance_mm, wall=True)
    for point in room_points(model, ch, settings):
        moved = channel_along(model.inside, point, ch.direction, ch.isthmus_area_mm2)
        if clear and np.linalg.norm(moved.entry - ch.entry) > S1_ENTRY_MOVE_MM:
            continue
        fit = _fit(model, side, moved, settings)
        if fit is not None:
            found.append(fit)
    if not found:
        raise InferenceError(f"S1 {side}: no axis near the S1 track holds a screw", str(side))
    return max(found, key=lambda f: (f[1], f[0].diameter))[0]


def _fit(
    model: VertebraModel, side: Side, ch: Channel, settings: PlanningSettings
) -> tuple[Draft, bool] | None:
    """The screw in ``ch`` sized by :func:`widest`, and whether it keeps the margin (None if
    the channel is too short for any screw)."""
    try:
        draft = sized(model, side, ch, settings)
    except InferenceError:
        return None
    return widest(model, draft, settings)


def _runs(values: FloatArray, zero: int) -> tuple[np.ndarray, np.ndarray]:
    """(first, last) index of the run of ``values`` ≤ 0 through column ``zero`` in each row
    (first > last where column ``zero`` itself is > 0)."""
    outside = values > 0.0
    cols = np.arange(values.shape[1])
    before = np.where(outside & (cols < zero), cols, -1).max(axis=1)
    after = np.where(outside & (cols > zero), cols, values.shape[1]).min(axis=1)
    first, last = before + 1, after - 1
    last = np.where(outside[:, zero], first - 1, last)
    return first, last


def room_points(model: VertebraModel, ch: Channel, settings: PlanningSettings) -> FloatArray:
    """Up to ``S1_CANDIDATES`` isthmus points moved ⊥ the axis (≤ ``S1_SHIFT_MM``, 1 mm grid)
    whose lines, by our mask's room from ``ROOM_FROM_MM`` past their entry to their tip (0.8 ×
    their bone run, snapped down), hold the largest diameter with ``S1_MARGIN_MM`` to spare;
    the nearest first. Lines through a point less than 1 mm inside our mask are left out."""
    d = ch.direction
    u1, u2 = perpendicular_basis(d)
    g = np.arange(-S1_SHIFT_MM, S1_SHIFT_MM + 1e-9, S1_SHIFT_STEP_MM)
    i, j = (a.ravel() for a in np.meshgrid(g, g, indexing="ij"))
    keep = np.hypot(i, j) <= S1_SHIFT_MM + 1e-9
    dist = np.hypot(i, j)[keep]
    offsets = i[keep, None] * u1 + j[keep, None] * u2
    step = 0.5
    t = np.arange(-80.0, 120.0 + 1e-9, step)
    zero = int(np.argmin(np.abs(t)))
    pts = ch.isthmus + offsets[:, None, :] + t[None, :, None] * d
    vals = model.safety_phi(pts.reshape(-1, 3)).reshape(len(offsets), t.size)
    first, last = _runs(vals, zero)
    fits = np.zeros(len(offsets))
    for k in range(len(offsets)):
        length = snap_length(
            (last[k] - first[k]) * step, settings.insertion_ratio, settings.lengths_mm
        )
        if length is None or vals[k, zero] > -1.0:
            continue
        lo = first[k] + round(ROOM_FROM_MM / step)
        hi = first[k] + round(length / step)
        room = -float(vals[k, lo : hi + 1].max()) if hi >= lo else 0.0
        fits[k] = fit_diameter(room, S1_MARGIN_MM, settings.diameters_mm) or 0.0
    order = np.lexsort((dist, -fits))
    order = order[fits[order] > 0][:S1_CANDIDATES]
    out: FloatArray = ch.isthmus + offsets[order]
    return out


def widest(model: VertebraModel, draft: Draft, settings: PlanningSettings) -> tuple[Draft, bool]:
    """``draft`` with the largest catalogue diameter the grader passes on our mask whose thread
    keeps ``S1_MARGIN_MM`` of its bone from ``ROOM_FROM_MM`` past the entry (where the oblique
    entry cortex is behind it), and True; failing that, the largest the grader passes (else
    ``draft`` unchanged), and False."""
    passed: list[Draft] = []
    for diameter in sorted(settings.diameters_mm, reverse=True):
        wide = Draft(draft.side, draft.channel, draft.length, diameter)
        if breaches(model, wide, model.tolerance_mm, wall=True):
            continue
        deep = wide.screw.surface_points(start_mm=ROOM_FROM_MM)
        if float(model.safety_phi(deep).max()) <= -S1_MARGIN_MM:
            return wide, True
        passed.append(wide)
    return (passed[0] if passed else draft), False

"""Plan both pedicle screws of one vertebra: size from the channel and the isthmus, then the
breach/collision correction loop, then the final grades (patient frame, LPS mm)."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from inference.errors import InferenceError
from inference.geometry import (
    BoolArray,
    FloatArray,
    SignedDistance,
    VolumeSampler,
    perpendicular_basis,
    segment_distance,
)
from inference.grading import (
    BREACH_TOLERANCE_MM,
    FacetJoint,
    Screw,
    babu_grade,
    gertzbein_robbins,
)
from inference.lumbar.catalogue import fit_diameter, next_smaller, snap_length
from inference.lumbar.frames import VertebraAnatomy, direction_from_angles, screw_angles
from inference.lumbar.isthmus import Channel, channel, channel_along
from inference.results import ScrewPlan, Side
from inference.settings import PlanningSettings

logger = logging.getLogger(__name__)

SYMMETRY_SLACK_MM = 0.5  # a side keeps its own axis if the mean one loses more room than this
# Screw head vs the vertebra above: our mask's clearance to the upper vertebra's bone that the
# screw must keep. Its inferior articular process hangs down beside the entry; our masks give part
# of it to the lower vertebra (they touch at every facet, with no joint gap between them) and so
# overestimate the distance by 2 mm on average (up to 6). More room at L4 (4.5 mm) and L5 (5.0)
# was tried: on 20 phantoms (bench_lumbar at aa3115f) it took Babu 0 from 98.7 to 100 % but GR A
# from 98.7 to 97.5 % and |dPTA| at L5 from 2.81 to 3.48°, so every level asks for 3.5 mm.
HEAD_CLEARANCE_MM = 3.5
HEAD_SHIFTS_MM = (0.5, 1.0, 1.5, 2.0, 2.5, 3.0)  # entry moves tried, away from the upper bone
# A screw moved parallel keeps this much bone between its thread and our mask's surface (the whole
# shaft moves towards the pedicle wall): moved L5 screws accepted at 0 mm had thread 0.0-0.1 mm
# inside our mask 3 mm past the entry and breached the true mask there by 0.06-0.09 mm (seeds 9,
# 14). A pivoted screw keeps 0 mm (the same margin there cost Babu grades: seeds 3, 9, 18).
MOVED_MARGIN_MM = 0.5
# An S1 screw that still leaves our mask once the sizes have run out (its axis is a prior, 35° /
# 0° in the S1 frame, not read from the image): the axis is tilted about the isthmus by REAIM_DEG,
# in REAIM_AZIMUTHS directions each, smallest tilt first. Not moved parallel: on seed 11 a 4-6 mm
# move found room in our mask where the true S1 has none (true GR B 0.9-1.5 mm, entry 14 mm off).
# L1-L5 axes are measured and keep their angles (the pair stays mirror-symmetric).
REAIM_DEG = (2.0, 4.0, 6.0)
REAIM_AZIMUTHS = 8
# A lumbosacral pedicle converges (PTA L1 ≈ 11° … L5 ≈ 30°, S1 35-40°; CT L5 20.7 ± 3.8°) and runs
# near the endplate's plane (ALGORITHMS.md): a screw outside these bounds followed something other
# than the pedicle (on 20 phantoms only three gross failures of one 3 mm phantom were, up to 35 mm
# off the reference) and is not planned.
PLAUSIBLE_PTA_DEG = (0.0, 50.0)
PLAUSIBLE_PSA_DEG = 20.0


@dataclass(frozen=True, slots=True)
class VertebraModel:
    """One segmented vertebra ready for planning: its mask, frame and distance fields."""

    level: str
    mask: BoolArray
    affine: FloatArray
    anatomy: VertebraAnatomy
    phi: SignedDistance
    inside: VolumeSampler

    @classmethod
    def build(
        cls, level: str, mask: BoolArray, affine: FloatArray, anatomy: VertebraAnatomy
    ) -> VertebraModel:
        return cls(
            level=level,
            mask=mask,
            affine=affine,
            anatomy=anatomy,
            phi=SignedDistance(mask, affine),
            inside=VolumeSampler(mask.astype(np.float32), affine, 0.0),
        )


@dataclass(frozen=True, slots=True)
class Draft:
    """A screw being sized: its channel and current catalogue size."""

    side: Side
    channel: Channel
    length: float
    diameter: float

    @property
    def screw(self) -> Screw:
        tip = self.channel.entry + self.length * self.channel.direction
        return Screw(self.channel.entry, tip, self.diameter)


def initial_draft(model: VertebraModel, side: Side, settings: PlanningSettings) -> Draft:
    """Channel, length (insertion ratio × channel, snapped down) and fitting diameter."""
    ch = channel(model.inside, model.phi, model.anatomy, side, sacral=model.level == "S1")
    return sized(model, side, ch, settings)


def sized(model: VertebraModel, side: Side, ch: Channel, settings: PlanningSettings) -> Draft:
    """The draft screw in channel ``ch``: length = insertion ratio × channel snapped down, the
    largest diameter that fits the pedicle's room with the cortical margin."""
    length = snap_length(ch.length, settings.insertion_ratio, settings.lengths_mm)
    if length is None:
        if ch.length - 2.0 < settings.lengths_mm[0]:
            raise InferenceError(
                f"{model.level} {side}: channel {ch.length:.1f} mm too short for any screw",
                ch.length,
            )
        length = settings.lengths_mm[0]
    radius = ch.radius_mm
    diameter = fit_diameter(radius, settings.cortical_margin_mm, settings.diameters_mm)
    if diameter is None:
        logger.info(
            "%s %s: pedicle radius %.1f mm below the smallest screw", model.level, side, radius
        )
        diameter = settings.diameters_mm[0]
    return Draft(side, ch, length, diameter)


def _step_down(draft: Draft, settings: PlanningSettings, prefer_length: bool) -> Draft | None:
    """One catalogue step down: diameter first (length first for a tip breach)."""
    smaller_d = next_smaller(draft.diameter, settings.diameters_mm)
    smaller_l = next_smaller(draft.length, settings.lengths_mm)
    if prefer_length and smaller_l is not None:
        return Draft(draft.side, draft.channel, smaller_l, draft.diameter)
    if smaller_d is not None:
        return Draft(draft.side, draft.channel, draft.length, smaller_d)
    if smaller_l is not None:
        return Draft(draft.side, draft.channel, smaller_l, draft.diameter)
    return None


def _collide(a: Draft, b: Draft, clearance: float) -> bool:
    sa, sb = a.screw, b.screw
    gap = segment_distance(sa.entry, sa.tip, sb.entry, sb.tip)
    return gap < (sa.diameter + sb.diameter) / 2 + clearance


def correct(
    model: VertebraModel, drafts: dict[Side, Draft], settings: PlanningSettings
) -> dict[Side, Draft]:
    """Step sizes down until no screw breaches and the pair does not collide (or sizes run out)."""
    frame = model.anatomy.frame
    for _ in range(40):
        changed = False
        collide = len(drafts) == 2 and _collide(
            drafts[Side.LEFT], drafts[Side.RIGHT], settings.collision_clearance_mm
        )
        for side, draft in list(drafts.items()):
            gr = gertzbein_robbins(model.phi, draft.screw, frame, side)
            if gr.grade == "A" and not collide:
                continue
            smaller = _step_down(draft, settings, prefer_length=gr.direction == "anterior")
            if smaller is not None:
                drafts[side] = smaller
                changed = True
        if not changed:
            break
    return drafts


def _largest_clear(model: VertebraModel, draft: Draft, settings: PlanningSettings) -> Draft | None:
    """``draft`` stepped down until the grader finds no breach on our mask (diameter first,
    length first for a tip breach); None if the catalogue runs out."""
    current: Draft | None = draft
    while current is not None:
        gr = gertzbein_robbins(model.phi, current.screw, model.anatomy.frame, current.side)
        if gr.grade == "A":
            return current
        current = _step_down(current, settings, prefer_length=gr.direction == "anterior")
    return None


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
    if model.level != "S1" or not _breaches(model, draft, BREACH_TOLERANCE_MM):
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
            fit = _largest_clear(model, cand, settings)
            if fit is not None:
                found.append(fit)
        if found:
            return max(found, key=lambda x: (x.diameter, x.length))
    return draft


def upper_clearance(upper: SignedDistance, screw: Screw) -> float:
    """Smallest distance (mm) from the screw's volume to the bone of the vertebra above."""
    return float(upper(screw.volume_points()).min())


def _breaches(model: VertebraModel, draft: Draft, tolerance_mm: float = 0.0) -> bool:
    """Does the screw leave our mask (by more than ``tolerance_mm``; a negative tolerance asks
    for that much bone between the thread and the surface)?"""
    gr = gertzbein_robbins(
        model.phi, draft.screw, model.anatomy.frame, draft.side, tolerance_mm=tolerance_mm
    )
    return gr.grade != "A"


def _moved(model: VertebraModel, draft: Draft, entry: FloatArray, pivot: FloatArray) -> Channel:
    """The channel of the axis from ``entry`` through ``pivot`` (isthmus re-projected)."""
    d = pivot - entry
    d = d / np.linalg.norm(d)
    isthmus = entry + ((draft.channel.isthmus - entry) @ d) * d
    return channel_along(model.inside, isthmus, d, draft.channel.isthmus_area_mm2)


def _head_moves(
    model: VertebraModel, draft: Draft, away: FloatArray, settings: PlanningSettings
) -> Iterator[Draft]:
    """Sized drafts with the entry moved along ``away`` by each of ``HEAD_SHIFTS_MM``: the whole
    axis moved parallel (no angle change), then pivoting about the tip, the middle of the
    pedicle-to-tip span and the isthmus (smallest move first)."""
    entry, d = draft.channel.entry, draft.channel.direction
    depth = float((draft.channel.isthmus - entry) @ d)
    pivots = [entry + t * d for t in (draft.length, 0.5 * (depth + draft.length), depth)]
    for shift in HEAD_SHIFTS_MM:
        for pivot in [pivots[0] + shift * away, *pivots]:
            try:
                ch = _moved(model, draft, entry + shift * away, pivot)
                yield sized(model, draft.side, ch, settings)
            except InferenceError:
                continue


def _head_options(
    model: VertebraModel, draft: Draft, away: FloatArray, settings: PlanningSettings
) -> Iterator[Draft]:
    """The head moves at the full diameter, smallest first, then the same moves a diameter
    smaller."""
    moves: list[Draft] = []
    for option in _head_moves(model, draft, away, settings):
        moves.append(option)
        yield option
    for move in moves:
        thinner = _step_down(move, settings, prefer_length=False)
        if thinner is not None:
            yield thinner


def clear_of_upper(
    model: VertebraModel, draft: Draft, upper: SignedDistance, settings: PlanningSettings
) -> Draft:
    """Move the screw head away from the vertebra above (its inferior articular process, the
    facet joint) until our mask shows ``HEAD_CLEARANCE_MM`` of room, without a breach.

    The entry moves by 0.5-3 mm away from the nearest upper bone (perpendicular to the axis), the
    whole axis with it (no angle change) or pivoting about the tip, the body or the isthmus (the
    deeper, the smaller the angle change). The smallest move that reaches the clearance at the
    full diameter wins, else one a diameter smaller; failing both, the move with the most
    clearance, if better than the start.
    """
    screw = draft.screw
    start = upper_clearance(upper, screw)
    if start >= HEAD_CLEARANCE_MM:
        return draft
    pts = screw.volume_points()
    near = pts[int(np.argmin(upper(pts)))]
    away = upper.gradient(near[None, :])[0]
    away -= (away @ screw.direction) * screw.direction
    if np.linalg.norm(away) < 1e-6:
        return draft
    best, best_gap = draft, start
    for option in _head_options(model, draft, away / np.linalg.norm(away), settings):
        parallel = float(option.channel.direction @ draft.channel.direction) > 1.0 - 1e-9
        if _breaches(model, option, -MOVED_MARGIN_MM if parallel else 0.0):
            continue
        gap = upper_clearance(upper, option.screw)
        if gap >= HEAD_CLEARANCE_MM:
            return option
        if gap > best_gap + 0.25:
            best, best_gap = option, gap
    return best


def finish(model: VertebraModel, draft: Draft, joint: FacetJoint | None) -> ScrewPlan:
    """Angles and final grades of a sized screw."""
    screw = draft.screw
    frame = model.anatomy.frame
    pta, psa = screw_angles(frame, screw.entry, screw.tip, draft.side)
    gr = gertzbein_robbins(model.phi, screw, frame, draft.side)
    babu = babu_grade(joint, screw) if joint is not None else 0
    return ScrewPlan(
        level=model.level,
        side=draft.side,
        entry_mm=_pt(screw.entry),
        tip_mm=_pt(screw.tip),
        length_mm=float(draft.length),
        diameter_mm=float(draft.diameter),
        channel_mm=draft.channel.length,
        pta_deg=pta,
        psa_deg=psa,
        gr_grade=gr.grade,
        breach_mm=gr.breach_mm,
        breach_direction=gr.direction,
        babu_grade=babu,
    )


def _pt(p: FloatArray) -> tuple[float, float, float]:
    return (float(p[0]), float(p[1]), float(p[2]))


def symmetric(
    model: VertebraModel, drafts: dict[Side, Draft], settings: PlanningSettings
) -> dict[Side, Draft]:
    """Both axes turned to the mean of their (PTA, PSA) in the vertebra frame.

    Left and right pedicles mirror each other about the midsagittal plane, so averaging halves
    each side's own error. A side keeps its own axis where the mean one has clearly less room.
    """
    frame = model.anatomy.frame
    angles = {
        side: screw_angles(frame, d.channel.entry, d.channel.exit, side)
        for side, d in drafts.items()
    }
    pta = float(np.mean([a[0] for a in angles.values()]))
    psa = float(np.mean([a[1] for a in angles.values()]))
    out: dict[Side, Draft] = {}
    for side, draft in drafts.items():
        ch = draft.channel
        d = direction_from_angles(frame, pta, psa, side)
        new = channel_along(model.inside, ch.isthmus, d, ch.isthmus_area_mm2)
        if new.radius_mm < ch.radius_mm - SYMMETRY_SLACK_MM:
            out[side] = draft
            continue
        try:
            out[side] = sized(model, side, new, settings)
        except InferenceError:
            out[side] = draft
    return out


def plan_vertebra(
    model: VertebraModel,
    settings: PlanningSettings,
    joints: dict[Side, FacetJoint | None],
    upper: SignedDistance | None = None,
) -> tuple[list[ScrewPlan], list[str]]:
    """Both screws of one vertebra, with warnings for sides that could not be planned.

    ``upper``: signed distance to the vertebra above (same patient frame), when it is in view; the
    screw heads are then kept clear of it (:func:`clear_of_upper`).
    """
    drafts: dict[Side, Draft] = {}
    warnings: list[str] = []
    for side in (Side.LEFT, Side.RIGHT):
        try:
            drafts[side] = initial_draft(model, side, settings)
        except InferenceError as exc:
            warnings.append(f"{model.level} {side}: not planned ({exc})")
    if len(drafts) == 2:
        drafts = symmetric(model, drafts, settings)
    drafts = correct(model, drafts, settings)
    if upper is not None:
        for side, draft in list(drafts.items()):
            drafts[side] = clear_of_upper(model, draft, upper, settings)
        drafts = correct(model, drafts, settings)
    reaimed = {side: reaim(model, d, settings) for side, d in drafts.items()}
    if any(reaimed[side] is not drafts[side] for side in drafts):
        drafts = correct(model, reaimed, settings)
    plans = []
    for side, draft in drafts.items():
        plan = finish(model, draft, joints.get(side))
        low, high = PLAUSIBLE_PTA_DEG
        if low <= plan.pta_deg <= high and abs(plan.psa_deg) <= PLAUSIBLE_PSA_DEG:
            plans.append(plan)
        else:
            warnings.append(
                f"{model.level} {side}: not planned (the axis found, PTA {plan.pta_deg:.0f}°"
                f" PSA {plan.psa_deg:.0f}°, is not a pedicle's: PTA {low:.0f}-{high:.0f}°,"
                f" |PSA| ≤ {PLAUSIBLE_PSA_DEG:.0f}° expected)"
            )
    return plans, warnings

"""Plan both pedicle screws of one vertebra: size from the channel and the isthmus (S1: from the
room of the prior axis, :mod:`inference.lumbar.sacral`), then the breach/collision correction
loop, the head kept clear of the vertebra above, then the final grades (patient frame, LPS mm)."""

from __future__ import annotations

import logging
from collections.abc import Iterator

import numpy as np

from inference.errors import InferenceError
from inference.geometry import (
    FloatArray,
    SignedDistance,
    segment_distance,
)
from inference.grading import (
    FacetJoint,
    Screw,
    babu_grade,
    gertzbein_robbins,
)
from inference.lumbar.draft import (
    Draft,
    VertebraModel,
    breaches,
    initial_draft,
    sized,
    step_down,
)
from inference.lumbar.frames import direction_from_angles, screw_angles
from inference.lumbar.isthmus import Channel, channel_along
from inference.lumbar.sacral import reaim, s1_draft
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
# A lumbosacral pedicle converges (PTA L1 ≈ 11° … L5 ≈ 30°, S1 35-40°; CT L5 20.7 ± 3.8°) and runs
# near the endplate's plane (ALGORITHMS.md): a screw outside these bounds followed something other
# than the pedicle (on 20 phantoms only three gross failures of one 3 mm phantom were, up to 35 mm
# off the reference) and is not planned.
PLAUSIBLE_PTA_DEG = (0.0, 50.0)
PLAUSIBLE_PSA_DEG = 20.0


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
            smaller = step_down(draft, settings, prefer_length=gr.direction == "anterior")
            if smaller is not None:
                drafts[side] = smaller
                changed = True
        if not changed:
            break
    return drafts


def upper_clearance(upper: SignedDistance, screw: Screw) -> float:
    """Smallest distance (mm) from the screw's volume to the bone of the vertebra above."""
    return float(upper(screw.volume_points()).min())


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
        thinner = step_down(move, settings, prefer_length=False)
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
        if breaches(model, option, -MOVED_MARGIN_MM if parallel else 0.0):
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
    sacral = model.level == "S1"
    for side in (Side.LEFT, Side.RIGHT):
        try:
            drafts[side] = (s1_draft if sacral else initial_draft)(model, side, settings)
        except InferenceError as exc:
            warnings.append(f"{model.level} {side}: not planned ({exc})")
    if len(drafts) == 2 and not sacral:  # the S1 axes are one prior, mirror-symmetric already
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

"""Plan both pedicle screws of one vertebra: size from the channel and the isthmus, then the
breach/collision correction loop, then the final grades (patient frame, LPS mm)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from inference.errors import InferenceError
from inference.geometry import (
    BoolArray,
    FloatArray,
    SignedDistance,
    VolumeSampler,
    segment_distance,
)
from inference.grading import FacetJoint, Screw, babu_grade, gertzbein_robbins
from inference.lumbar.catalogue import fit_diameter, next_smaller, snap_length
from inference.lumbar.frames import VertebraAnatomy, direction_from_angles, screw_angles
from inference.lumbar.isthmus import Channel, channel, channel_along
from inference.results import ScrewPlan, Side
from inference.settings import PlanningSettings

logger = logging.getLogger(__name__)

SYMMETRY_SLACK_MM = 0.5  # a side keeps its own axis if the mean one loses more room than this


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
    model: VertebraModel, settings: PlanningSettings, joints: dict[Side, FacetJoint | None]
) -> tuple[list[ScrewPlan], list[str]]:
    """Both screws of one vertebra, with warnings for sides that could not be planned."""
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
    plans = [finish(model, d, joints.get(side)) for side, d in drafts.items()]
    return plans, warnings

"""A screw being sized in one segmented vertebra: the vertebra's model, the draft screw on its
channel, catalogue sizing and the breach checks on our mask (patient frame, LPS mm)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, replace

import numpy as np

from inference.errors import InferenceError
from inference.geometry import (
    BoolArray,
    FloatArray,
    SignedDistance,
    VolumeSampler,
    perpendicular_basis,
)
from inference.grading import BREACH_TOLERANCE_MM, Screw, gertzbein_robbins
from inference.lumbar.catalogue import fit_diameter, next_smaller, snap_length
from inference.lumbar.frames import VertebraAnatomy, direction_from_angles
from inference.lumbar.isthmus import Channel, channel, channel_along, corridor_axis
from inference.results import Side
from inference.settings import PlanningSettings

logger = logging.getLogger(__name__)

# breach tolerance of the planner's own checks on the native-grid wall: none, the wall itself
# is still 0.05-0.6 mm too far out on the phantoms (seeds 4, 11), where the grader's 0.25 mm
# tolerance is the voxelisation of the truth; on the working mask alone (no native labels) the
# grader's tolerance, as before
WALL_TOLERANCE_MM = 0.0
# The anatomical prior of a lumbar pedicle's axis, PTA (°) per level (ALGORITHMS.md: Zindrick
# L1 ≈ 11°, CT L4 14.5 ± 3.9°, L5 20.7 ± 3.8°) with PSA 0 in the vertebra frame, searched within
# PRIOR_CONE_DEG for the widest corridor through the isthmus found. Taken only where the axis
# found leaves the vertebra too early for any screw, or where even the smallest screw on it
# leaves our walls (and the prior's smallest screw leaves them by less than RESCUE_BREACH_MM):
# on the real CT's 3 mm voxels the image axis of L5 ran 50-80° off the vertebra's a on
# TotalSegmentator's masks (channels 27 and 31 mm).
PRIOR_PTA_DEG = {"L1": 11.0, "L2": 12.0, "L3": 13.5, "L4": 14.5, "L5": 20.7, "L6": 20.7}
PRIOR_CONE_DEG = 12.0
# An axis on which even the smallest screw leaves our walls by this much (the planner's
# UNPLANNED_BREACH_MM) is moved parallel by these shifts, in 8 directions around it, before the
# prior is tried: on 3 mm voxels a pedicle is 2-3 voxels wide and its centroid line can sit a
# voxel off (the real CT on TotalSegmentator's masks: L1 right 1.2 mm inferior, L4 right 0.8 mm
# medial at 30 x 4.5 mm)
RESCUE_BREACH_MM = 0.5
RESCUE_SHIFTS_MM = (0.5, 1.0, 1.5, 2.0)


@dataclass(frozen=True, slots=True)
class VertebraModel:
    """One segmented vertebra ready for planning: its mask, frame and distance fields."""

    level: str
    mask: BoolArray
    affine: FloatArray
    anatomy: VertebraAnatomy
    phi: SignedDistance
    inside: VolumeSampler
    wall: SignedDistance | None = None

    @classmethod
    def build(
        cls,
        level: str,
        mask: BoolArray,
        affine: FloatArray,
        anatomy: VertebraAnatomy,
        wall: SignedDistance | None = None,
    ) -> VertebraModel:
        """The model of ``mask`` (1 mm working grid, ``affine`` index → LPS mm); ``wall``: the
        signed distance to the same vertebra's native-grid label (see :attr:`safety_phi`)."""
        return cls(
            level=level,
            mask=mask,
            affine=affine,
            anatomy=anatomy,
            phi=SignedDistance(mask, affine),
            inside=VolumeSampler(mask.astype(np.float32), affine, 0.0),
            wall=wall,
        )

    @property
    def safety_phi(self) -> SignedDistance:
        """The signed distance the breach checks and the reported grades use: to the native-grid
        label where there is one (its border re-decided at the input's resolution: the 1 mm
        working grid puts the pedicle walls 0.5-1 mm too far out), else to the working mask.
        The axis, isthmus and channel stay on the working grid."""
        return self.wall if self.wall is not None else self.phi

    @property
    def tolerance_mm(self) -> float:
        """Breach tolerance of the planner's checks on :attr:`safety_phi`."""
        return WALL_TOLERANCE_MM if self.wall is not None else BREACH_TOLERANCE_MM


@dataclass(frozen=True, slots=True)
class Draft:
    """A screw being sized: its channel and current catalogue size."""

    side: Side
    channel: Channel
    length: float
    diameter: float
    rescue: str | None = None  # how the axis was rescued (initial_draft), for the warnings

    @property
    def screw(self) -> Screw:
        tip = self.channel.entry + self.length * self.channel.direction
        return Screw(self.channel.entry, tip, self.diameter)


def initial_draft(model: VertebraModel, side: Side, settings: PlanningSettings) -> Draft:
    """Channel, length (insertion ratio × channel, snapped down) and fitting diameter.

    A lumbar axis too short for any screw, or on which even the smallest screw leaves our walls
    by ``RESCUE_BREACH_MM``, gives way to the same axis moved parallel (:func:`shifted_draft`)
    or to the prior axis through the same isthmus (:func:`prior_draft`), where one of them
    holds a screw within our walls; else it is kept (and the planner reports it)."""
    ch = channel(model.inside, model.phi, model.anatomy, side, sacral=model.level == "S1")
    lumbar = model.level in PRIOR_PTA_DEG
    try:
        draft = sized(model, side, ch, settings)
    except InferenceError:
        rescued = prior_draft(model, side, ch, settings) if lumbar else None
        if rescued is None:
            raise
        return rescued
    if not lumbar or smallest_breach(model, draft, settings) < RESCUE_BREACH_MM:
        return draft
    rescued = shifted_draft(model, draft, settings) or prior_draft(model, side, ch, settings)
    return draft if rescued is None else rescued


def smallest_breach(model: VertebraModel, draft: Draft, settings: PlanningSettings) -> float:
    """How far (mm) the catalogue's smallest screw on ``draft``'s channel leaves our walls."""
    screw = smallest(draft, settings).screw
    gr = gertzbein_robbins(
        model.safety_phi, screw, model.anatomy.frame, draft.side, tolerance_mm=model.tolerance_mm
    )
    return gr.breach_mm


def shifted_draft(model: VertebraModel, draft: Draft, settings: PlanningSettings) -> Draft | None:
    """``draft``'s axis moved parallel by the least of ``RESCUE_SHIFTS_MM`` (8 directions
    around it) at which a screw clears our walls (:func:`largest_clear`): the largest such
    screw, or None."""
    ch = draft.channel
    u, v = perpendicular_basis(ch.direction)
    for shift in RESCUE_SHIFTS_MM:
        options: list[Draft] = []
        for angle in np.radians(np.arange(0.0, 360.0, 45.0)):
            point = ch.isthmus + shift * (np.cos(angle) * u + np.sin(angle) * v)
            moved = channel_along(model.inside, point, ch.direction, ch.isthmus_area_mm2)
            try:
                fit = largest_clear(model, sized(model, draft.side, moved, settings), settings)
            except InferenceError:
                continue
            if fit is not None:
                options.append(fit)
        if options:
            best = max(options, key=lambda d: (d.diameter, d.length))
            logger.info(
                "%s %s: axis moved %.1f mm to clear our walls", model.level, draft.side, shift
            )
            return replace(
                best,
                rescue=f"even the smallest screw on the pedicle axis found left the bone; the"
                f" screw is moved {shift:.1f} mm parallel to that axis (check the trajectory)",
            )
    return None


def smallest(draft: Draft, settings: PlanningSettings) -> Draft:
    """The catalogue's smallest screw on ``draft``'s channel."""
    return Draft(draft.side, draft.channel, settings.lengths_mm[0], settings.diameters_mm[0])


def prior_draft(
    model: VertebraModel, side: Side, found: Channel, settings: PlanningSettings
) -> Draft | None:
    """The draft on the prior axis (``PRIOR_PTA_DEG``, PSA 0, the widest corridor within
    ``PRIOR_CONE_DEG``) through the isthmus of ``found``; None where no screw fits it or even
    the smallest screw on it leaves our walls by ``RESCUE_BREACH_MM``."""
    prior = direction_from_angles(model.anatomy.frame, PRIOR_PTA_DEG[model.level], 0.0, side)
    direction = corridor_axis(model.phi, found.isthmus, prior, PRIOR_CONE_DEG)
    ch = channel_along(model.inside, found.isthmus, direction, found.isthmus_area_mm2)
    try:
        draft = sized(model, side, ch, settings)
    except InferenceError:
        return None
    if smallest_breach(model, draft, settings) >= RESCUE_BREACH_MM:
        return None
    logger.info(
        "%s %s: the axis found (channel %.1f mm) gave way to the prior axis (channel %.1f mm)",
        model.level,
        side,
        found.length,
        ch.length,
    )
    return replace(
        draft,
        rescue=f"the pedicle axis found held no screw within the bone; the screw follows the"
        f" widest corridor within {PRIOR_CONE_DEG:.0f}° of this level's typical axis (PTA"
        f" {PRIOR_PTA_DEG[model.level]:.1f}°, PSA 0°) through the same isthmus (check the"
        " trajectory)",
    )


def sized(model: VertebraModel, side: Side, ch: Channel, settings: PlanningSettings) -> Draft:
    """The draft screw in channel ``ch``: length = insertion ratio × channel snapped down, the
    largest diameter that fits the pedicle's room with the cortical margin."""
    length = snap_length(ch.length, settings.insertion_ratio, settings.lengths_mm)
    if length is None:
        if ch.length - 2.0 < settings.lengths_mm[0]:
            raise InferenceError(
                f"the bone along the pedicle axis found is {ch.length:.1f} mm long; the shortest"
                f" screw ({settings.lengths_mm[0]:.0f} mm) needs {settings.lengths_mm[0] + 2:.0f}"
                " mm",
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


def step_down(draft: Draft, settings: PlanningSettings, prefer_length: bool) -> Draft | None:
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


def breaches(
    model: VertebraModel, draft: Draft, tolerance_mm: float = 0.0, *, wall: bool = False
) -> bool:
    """Does the screw leave our mask (by more than ``tolerance_mm``; a negative tolerance asks
    for that much bone between the thread and the surface)? ``wall``: judged on
    :attr:`VertebraModel.safety_phi` instead of the working mask."""
    phi = model.safety_phi if wall else model.phi
    gr = gertzbein_robbins(
        phi, draft.screw, model.anatomy.frame, draft.side, tolerance_mm=tolerance_mm
    )
    return gr.grade != "A"


def largest_clear(model: VertebraModel, draft: Draft, settings: PlanningSettings) -> Draft | None:
    """``draft`` stepped down until the grader finds no breach on our mask (diameter first,
    length first for a tip breach); None if the catalogue runs out."""
    current: Draft | None = draft
    while current is not None:
        gr = gertzbein_robbins(
            model.safety_phi,
            current.screw,
            model.anatomy.frame,
            current.side,
            tolerance_mm=model.tolerance_mm,
        )
        if gr.grade == "A":
            return current
        current = step_down(current, settings, prefer_length=gr.direction == "anterior")
    return None

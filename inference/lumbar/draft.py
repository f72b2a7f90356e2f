"""A screw being sized in one segmented vertebra: the vertebra's model, the draft screw on its
channel, catalogue sizing and the breach checks on our mask (patient frame, LPS mm)."""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np

from inference.errors import InferenceError
from inference.geometry import BoolArray, FloatArray, SignedDistance, VolumeSampler
from inference.grading import Screw, gertzbein_robbins
from inference.lumbar.catalogue import fit_diameter, next_smaller, snap_length
from inference.lumbar.frames import VertebraAnatomy
from inference.lumbar.isthmus import Channel, channel
from inference.results import Side
from inference.settings import PlanningSettings

logger = logging.getLogger(__name__)


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


def breaches(model: VertebraModel, draft: Draft, tolerance_mm: float = 0.0) -> bool:
    """Does the screw leave our mask (by more than ``tolerance_mm``; a negative tolerance asks
    for that much bone between the thread and the surface)?"""
    gr = gertzbein_robbins(
        model.phi, draft.screw, model.anatomy.frame, draft.side, tolerance_mm=tolerance_mm
    )
    return gr.grade != "A"


def largest_clear(model: VertebraModel, draft: Draft, settings: PlanningSettings) -> Draft | None:
    """``draft`` stepped down until the grader finds no breach on our mask (diameter first,
    length first for a tip breach); None if the catalogue runs out."""
    current: Draft | None = draft
    while current is not None:
        gr = gertzbein_robbins(model.phi, current.screw, model.anatomy.frame, current.side)
        if gr.grade == "A":
            return current
        current = step_down(current, settings, prefer_length=gr.direction == "anterior")
    return None

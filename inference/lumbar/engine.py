"""The lumbosacral engine: per labelled vertebra, frame → both screws → grades (LPS mm)."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np

from inference.errors import InferenceError
from inference.geometry import FloatArray, SignedDistance, bounding_box, crop_affine, unit
from inference.grading import FacetJoint, facet_joint
from inference.lumbar.draft import VertebraModel
from inference.lumbar.frames import VertebraAnatomy, check_frames, vertebra_anatomy
from inference.lumbar.planner import plan_vertebra
from inference.results import ScrewPlan, Side, VertebraLabel
from inference.settings import PlanningSettings
from inference.verse import LEVEL_TO_LABEL

if TYPE_CHECKING:
    from inference.pipeline import Segmentation

logger = logging.getLogger(__name__)

ANTERIOR_LPS = np.array([0.0, -1.0, 0.0])


@dataclass(frozen=True, slots=True)
class LumbarOutput:
    vertebrae: tuple[VertebraLabel, ...]
    screws: tuple[ScrewPlan, ...]
    warnings: tuple[str, ...]


def _cranial_hint(centroids: FloatArray, k: int) -> FloatArray:
    """Local spine direction (towards the head) at instance ``k`` from its neighbours."""
    lo = max(0, k - 1)
    hi = min(len(centroids) - 1, k + 1)
    if hi == lo:
        return np.array([0.0, 0.0, 1.0])
    d = centroids[lo] - centroids[hi]  # lower index = more cranial
    return unit(d)


@dataclass(frozen=True, slots=True, eq=False)
class PreparedLevel:
    """One labelled vertebra ready for planning: its model and the facet joints at risk."""

    model: VertebraModel
    joints: dict[Side, FacetJoint | None]
    confidence: float
    upper: SignedDistance | None


def prepare_levels(
    seg: Segmentation, settings: PlanningSettings
) -> tuple[list[PreparedLevel], list[str]]:
    """Frame, distance fields and facet joints of every level of ``settings.levels`` in ``seg``;
    warnings for levels without a frame."""
    labels = seg.instances
    aff = seg.work.affine
    found: list[tuple[int, str, tuple[slice, slice, slice], VertebraAnatomy]] = []
    warnings: list[str] = []
    for k, level in enumerate(seg.levels):
        if level not in settings.levels:
            continue
        box = bounding_box(labels == k + 1, 12)
        mask = labels[box] == k + 1
        sub_aff = crop_affine(aff, box)
        try:
            anatomy = vertebra_anatomy(
                _s1_core(mask, sub_aff, seg.centroids[k - 1]) if level == "S1" and k > 0 else mask,
                sub_aff,
                _cranial_hint(seg.centroids, k),
                ANTERIOR_LPS,
                superior_only=level == "S1",
            )
        except InferenceError as exc:
            warnings.append(f"{level}: no vertebra frame ({exc})")
            continue
        found.append((k, level, box, anatomy))
    # a frame far from its neighbours' (a thrown endplate fit) takes their interpolation
    checked, frame_warnings = check_frames(
        [f[1] for f in found], [f[3] for f in found], tuple(seg.levels)
    )
    warnings.extend(frame_warnings)
    out: list[PreparedLevel] = []
    for (k, level, box, _), anatomy in zip(found, checked, strict=True):
        sub_aff = crop_affine(aff, box)
        model = VertebraModel.build(level, labels[box] == k + 1, sub_aff, anatomy)
        upper = labels[box] == k if k > 0 else None
        out.append(
            PreparedLevel(
                model,
                _joints(labels, k, box, model),
                seg.confidence[k],
                SignedDistance(upper, sub_aff) if upper is not None and upper.any() else None,
            )
        )
    return out, warnings


def plan_lumbar(seg: Segmentation, settings: PlanningSettings) -> LumbarOutput:
    """Plan every level of ``settings.levels`` found in ``seg``."""
    prepared, warnings = prepare_levels(seg, settings)
    verts: list[VertebraLabel] = []
    screws: list[ScrewPlan] = []
    for item in prepared:
        level = item.model.level
        origin = item.model.anatomy.frame.origin
        verts.append(
            VertebraLabel(
                level,
                LEVEL_TO_LABEL[level],
                (float(origin[0]), float(origin[1]), float(origin[2])),
                item.confidence,
            )
        )
        plans, warn = plan_vertebra(item.model, settings, item.joints, item.upper)
        screws.extend(plans)
        warnings.extend(warn)
    return LumbarOutput(tuple(verts), tuple(screws), tuple(warnings))


def _s1_core(mask: np.ndarray, affine: FloatArray, l5_centroid: FloatArray) -> np.ndarray:
    """The part of the sacrum that holds the S1 body: near the midline under L5 (the alae, thick
    as they are, would otherwise pass for the body)."""
    idx = np.indices(mask.shape).reshape(3, -1).T
    pts = idx @ affine[:3, :3].T + affine[:3, 3]
    lateral = np.abs(pts[:, 0] - l5_centroid[0])
    near = np.linalg.norm(pts - l5_centroid, axis=1)
    keep = (lateral < 25.0) & (near < 60.0)
    out: np.ndarray = mask & keep.reshape(mask.shape)
    return out if out.sum() > 1000 else mask


def _joints(
    labels: np.ndarray, k: int, box: tuple[slice, slice, slice], model: VertebraModel
) -> dict[Side, FacetJoint | None]:
    """The facet joints at risk (with the vertebra above) on both sides, when it is in view."""
    if k == 0:
        return {Side.LEFT: None, Side.RIGHT: None}
    upper = labels[box] == k
    if not upper.any():
        return {Side.LEFT: None, Side.RIGHT: None}
    out: dict[Side, FacetJoint | None] = {}
    for side in (Side.LEFT, Side.RIGHT):
        try:
            out[side] = facet_joint(
                model.mask,
                upper,
                model.affine,
                frame=model.anatomy.frame,
                side=side,
                body_back_mm=model.anatomy.body_back_mm,
            )
        except InferenceError:
            out[side] = None
    return out

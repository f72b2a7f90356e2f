"""The lumbosacral engine: per labelled vertebra, frame → both screws → grades (LPS mm)."""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import numpy.typing as npt

from inference.errors import InferenceError
from inference.geometry import (
    FloatArray,
    SignedDistance,
    bounding_box,
    crop_affine,
    index_to_mm,
    mm_to_index,
    unit,
)
from inference.grading import FacetJoint, facet_joint
from inference.lumbar.body import with_native_labels
from inference.lumbar.draft import VertebraModel
from inference.lumbar.frames import VertebraAnatomy, check_frames, vertebra_anatomy
from inference.lumbar.planner import plan_vertebra
from inference.results import ScrewPlan, Side, VertebraLabel
from inference.settings import PlanningSettings
from inference.verse import LEVEL_TO_LABEL
from inference.workers import fork_map

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
class NativeLabels:
    """The label map on the input grid (VerSe ids, :func:`inference.segment.grid.to_native`) and
    its affine (index → LPS mm): the planner's breach checks use its walls."""

    labels: npt.NDArray[np.uint8]
    affine: FloatArray


# the native wall's distance field reaches this far outside the label (beyond: "outside by this")
WALL_PAD_MM = 3.0
# ... and covers only where screws go, in the vertebra frame: up to this far from the midline
# and behind the body's back wall (the phantoms' reference entries: 18-34 mm lateral, 16-25 mm
# behind; S1 axes move up to 10 mm), so the transverse processes' tips, the spinous process and
# the sacral alae cost no distance transform. The field is exact within WALL_PAD_MM of the cut.
WALL_LATERAL_MM = 50.0
WALL_BEHIND_MM = 35.0


def native_wall(
    native: NativeLabels, level: str, box: tuple[slice, slice, slice], work_affine: FloatArray
) -> SignedDistance | None:
    """Signed distance (LPS mm) to ``level``'s native-grid label inside the working-grid ``box``
    (mapped to native indices); None where that label is absent there."""
    # the working grid has the input's axes (grid.py), so two opposite corners span the box
    corners = np.array([[b.start for b in box], [b.stop - 1 for b in box]], dtype=np.float64)
    idx = mm_to_index(native.affine, index_to_mm(work_affine, corners))
    lo = np.maximum(np.floor(idx.min(axis=0)).astype(int) - 1, 0)
    hi = np.minimum(np.ceil(idx.max(axis=0)).astype(int) + 2, native.labels.shape)
    nbox = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    mask = native.labels[nbox] == LEVEL_TO_LABEL[level]
    if not mask.any():
        return None
    return SignedDistance(mask, crop_affine(native.affine, nbox), pad_mm=WALL_PAD_MM)


@dataclass(frozen=True, slots=True, eq=False)
class PreparedLevel:
    """One labelled vertebra ready for planning: its model and the facet joints at risk."""

    model: VertebraModel
    joints: dict[Side, FacetJoint | None]
    confidence: float
    upper: SignedDistance | None


Found = tuple[int, str, tuple[slice, slice, slice], VertebraAnatomy]
Planned = tuple[VertebraLabel, list[ScrewPlan], list[str]]


def prepare_levels(
    seg: Segmentation,
    settings: PlanningSettings,
    native: NativeLabels | None = None,
    workers: int | None = None,
) -> tuple[list[PreparedLevel], list[str]]:
    """Frame, distance fields and facet joints of every level of ``settings.levels`` in ``seg``;
    warnings for levels without a frame. ``native``: the same labels on the input grid, whose
    walls the breach checks then use (:attr:`VertebraModel.safety_phi`). ``workers``: processes
    for the frames (:func:`inference.workers.fork_map`; the models are made here)."""
    seg = _with_native(seg, native)
    found, warnings = _frames(seg, settings, workers)
    return [_prepare(seg, native, item) for item in found], warnings


def _with_native(seg: Segmentation, native: NativeLabels | None) -> Segmentation:
    """``seg`` with the background voxels its native labels give a vertebra added to that
    vertebra (:func:`inference.lumbar.body.with_native_labels`: a dark body's back, lost by the
    working grid's bone mask): the frames, models and joints are built on these."""
    if native is None:
        return seg
    filled = with_native_labels(
        seg.instances, seg.work.affine, seg.levels, native.labels, native.affine
    )
    return dataclasses.replace(seg, instances=filled)


def _frames(
    seg: Segmentation, settings: PlanningSettings, workers: int | None
) -> tuple[list[Found], list[str]]:
    """Box (working-grid indices, 12 voxels around the vertebra) and checked frame of every
    level of ``settings.levels`` in ``seg``; warnings for the levels without a frame."""
    wanted = [(k, level) for k, level in enumerate(seg.levels) if level in settings.levels]
    made = fork_map(lambda i: _anatomy(seg, *wanted[i]), len(wanted), workers)
    found: list[Found] = []
    warnings: list[str] = []
    for (k, level), item in zip(wanted, made, strict=True):
        if isinstance(item, str):
            warnings.append(item)
        else:
            found.append((k, level, item[0], item[1]))
    # a frame far from its neighbours' (a thrown endplate fit) takes their interpolation
    checked, frame_warnings = check_frames(
        [f[1] for f in found], [f[3] for f in found], tuple(seg.levels)
    )
    warnings.extend(frame_warnings)
    return [(k, lv, box, a) for (k, lv, box, _), a in zip(found, checked, strict=True)], warnings


def _anatomy(
    seg: Segmentation, k: int, level: str
) -> tuple[tuple[slice, slice, slice], VertebraAnatomy] | str:
    """Box and frame of instance ``k + 1`` (``level``), or the warning why it has none."""
    labels = seg.instances
    box = bounding_box(labels == k + 1, 12)
    mask = labels[box] == k + 1
    sub_aff = crop_affine(seg.work.affine, box)
    try:
        anatomy = vertebra_anatomy(
            _s1_core(mask, sub_aff, seg.centroids[k - 1]) if level == "S1" and k > 0 else mask,
            sub_aff,
            _cranial_hint(seg.centroids, k),
            ANTERIOR_LPS,
            superior_only=level == "S1",
            native_affine=seg.work.native_affine,
        )
    except InferenceError as exc:
        return f"{level}: no vertebra frame ({exc})"
    return box, anatomy


def _prepare(seg: Segmentation, native: NativeLabels | None, item: Found) -> PreparedLevel:
    """The model, facet joints and upper neighbour's distance of one framed level."""
    k, level, box, anatomy = item
    labels = seg.instances
    aff = seg.work.affine
    sub_aff = crop_affine(aff, box)
    wall = (
        native_wall(native, level, _screw_region(labels[box] == k + 1, box, aff, anatomy), aff)
        if native is not None
        else None
    )
    model = VertebraModel.build(level, labels[box] == k + 1, sub_aff, anatomy, wall)
    upper = labels[box] == k if k > 0 else None
    return PreparedLevel(
        model,
        _joints(labels, k, box, model),
        seg.confidence[k],
        SignedDistance(upper, sub_aff) if upper is not None and upper.any() else None,
    )


def plan_lumbar(
    seg: Segmentation,
    settings: PlanningSettings,
    native: NativeLabels | None = None,
    workers: int | None = None,
) -> LumbarOutput:
    """Plan every level of ``settings.levels`` found in ``seg`` (``native``: see
    :func:`prepare_levels`).

    The levels are independent once framed: each is prepared and planned in one of
    ``workers`` processes (:func:`inference.workers.fork_map`, default two where two CPUs are
    ours), the largest boxes first; the result is the serial one's
    (:func:`prepare_levels` then :func:`plan_prepared`).
    """
    seg = _with_native(seg, native)
    found, warnings = _frames(seg, settings, workers)
    size = [_box_voxels(f[2]) for f in found]
    order = sorted(range(len(found)), key=lambda i: -size[i])

    def plan_one(j: int) -> Planned:
        return _plan_level(_prepare(seg, native, found[order[j]]), settings)

    done = fork_map(plan_one, len(found), workers)
    by_level = sorted(zip(order, done, strict=True), key=lambda pair: pair[0])
    return _output([d for _, d in by_level], warnings)


def plan_prepared(
    prepared: list[PreparedLevel], settings: PlanningSettings, warnings: list[str]
) -> LumbarOutput:
    """Plan the levels :func:`prepare_levels` made ready (``warnings``: its warnings)."""
    return _output([_plan_level(item, settings) for item in prepared], warnings)


def _plan_level(item: PreparedLevel, settings: PlanningSettings) -> Planned:
    """One prepared level's label, screws and warnings."""
    plans, warn = plan_vertebra(item.model, settings, item.joints, item.upper)
    level = item.model.level
    origin = item.model.anatomy.frame.origin
    label = VertebraLabel(
        level,
        LEVEL_TO_LABEL[level],
        (float(origin[0]), float(origin[1]), float(origin[2])),
        item.confidence,
    )
    return label, plans, warn


def _output(done: list[Planned], warnings: list[str]) -> LumbarOutput:
    """The levels' labels, screws and warnings in level order after ``warnings``."""
    out_warnings = list(warnings)
    screws: list[ScrewPlan] = []
    for _, plans, warn in done:
        screws.extend(plans)
        out_warnings.extend(warn)
    return LumbarOutput(tuple(d[0] for d in done), tuple(screws), tuple(out_warnings))


def _box_voxels(box: tuple[slice, slice, slice]) -> int:
    return int(np.prod([s.stop - s.start for s in box]))


def _screw_region(
    mask: np.ndarray, box: tuple[slice, slice, slice], affine: FloatArray, anatomy: VertebraAnatomy
) -> tuple[slice, slice, slice]:
    """The part of the working-grid ``box`` (``mask`` is the vertebra in it) where screws can go:
    the box of the mask's voxels within ``WALL_LATERAL_MM`` of the midline and
    ``WALL_BEHIND_MM`` behind the body, grown by ``WALL_PAD_MM`` (working-grid indices)."""
    idx = np.argwhere(mask)
    local = anatomy.frame.to_local(index_to_mm(crop_affine(affine, box), idx))
    keep = (np.abs(local[:, 0]) <= WALL_LATERAL_MM) & (
        local[:, 1] >= anatomy.body_back_mm - WALL_BEHIND_MM
    )
    if not keep.any():
        return box
    pad = int(np.ceil(WALL_PAD_MM))
    lo = idx[keep].min(axis=0) - pad
    hi = idx[keep].max(axis=0) + pad + 1
    s0, s1, s2 = (
        slice(b.start + max(0, int(a)), b.start + min(int(c), b.stop - b.start))
        for a, c, b in zip(lo, hi, box, strict=True)
    )
    return (s0, s1, s2)


def _s1_core(mask: np.ndarray, affine: FloatArray, l5_centroid: FloatArray) -> np.ndarray:
    """The part of the sacrum that holds the S1 body: near the midline under L5 (the alae, thick
    as they are, would otherwise pass for the body)."""
    idx = np.argwhere(mask)  # only the mask's voxels: the box around them is ten times larger
    pts = idx @ affine[:3, :3].T + affine[:3, 3]
    lateral = np.abs(pts[:, 0] - l5_centroid[0])
    near = np.linalg.norm(pts - l5_centroid, axis=1)
    keep = (lateral < 25.0) & (near < 60.0)
    out = np.zeros(mask.shape, dtype=bool)
    out[tuple(idx[keep].T)] = True
    return out if int(keep.sum()) > 1000 else mask


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

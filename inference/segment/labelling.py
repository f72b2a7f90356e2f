"""Level names for vertebra instances, counted from the sacrum and checked against the ribs.

The most caudal instance is the sacrum when it is much longer (fused segments) or wider (alae)
than the vertebrae above it. Ribs are long detached bones touching a vertebra; the lowest
rib-bearing vertebra is T12. A count between them other than five lumbar vertebrae is reported
as a transitional anatomy (L6 or sacralised L5) with lowered confidence, never hidden.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.errors import NotApplicableError
from inference.geometry import FloatArray, index_to_mm, label_voxels, voxel_spacing
from inference.segment.assign import OTHER
from inference.segment.instances import Instances

LUMBAR_ORDER = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "L6", "S1")


@dataclass(frozen=True, slots=True)
class LevelAssignment:
    """``levels[k]`` names instance ``k + 1`` (cranial first); ``confidence`` per instance."""

    levels: tuple[str, ...]
    confidence: tuple[float, ...]
    warnings: tuple[str, ...]


def is_sacrum(inst: Instances) -> bool:
    """Whether the most caudal instance looks like the sacrum (long fused core or wide alae)."""
    n = len(inst.centroids)
    if n < 2:
        return bool(n == 1 and inst.core_extent_mm[0] > 30.0)
    others_ext = float(np.median(inst.core_extent_mm[:-1]))
    others_w = float(np.median(inst.width_mm[:-1]))
    return bool(inst.core_extent_mm[-1] > 1.8 * others_ext or inst.width_mm[-1] > 1.3 * others_w)


def merge_sacrum(inst: Instances) -> Instances:
    """Fold sacral segments below S1 into it: while the second most caudal instance already looks
    like the sacrum (wide alae) and the instance below it is narrower (the sacrum tapers), the
    latter is a lower sacral segment. A wide L5 (long transverse processes) above a still wider
    S1 is not merged."""
    while len(inst.centroids) >= 4:
        n = len(inst.centroids)
        above = inst.width_mm[: n - 2]
        if inst.width_mm[n - 2] <= 1.3 * float(np.median(above)):
            break
        if inst.width_mm[n - 1] >= inst.width_mm[n - 2]:
            break
        labels = inst.labels.copy()
        labels[labels == n] = n - 1
        inst = Instances(
            labels,
            inst.centroids[: n - 1],
            np.append(inst.core_extent_mm[: n - 2], inst.core_extent_mm[n - 2 :].sum()),
            np.append(inst.width_mm[: n - 2], inst.width_mm[n - 2 :].max()),
        )
    return inst


def rib_bearing(
    inst: Instances, affine: npt.ArrayLike, cranial: FloatArray, min_length_mm: float = 45.0
) -> list[int]:
    """0-based indices of instances touched by long detached bones (ribs) on both sides."""
    aff = np.asarray(affine, dtype=np.float64)
    spacing = voxel_spacing(aff)
    other = inst.labels == OTHER
    cc, _ = ndimage.label(other)
    found: dict[int, set[bool]] = {}
    for k, box in enumerate(ndimage.find_objects(cc), start=1):
        if box is None:
            continue
        pts = index_to_mm(aff, np.argwhere(cc[box] == k)[::3] + [s.start for s in box])
        if pts.shape[0] * 3 * float(np.prod(spacing)) < 300.0:
            continue
        if float(np.linalg.norm(pts.max(axis=0) - pts.min(axis=0))) < min_length_mm:
            continue
        grown = tuple(slice(max(0, s.start - 4), s.stop + 4) for s in box)
        near = ndimage.binary_dilation(cc[grown] == k, iterations=3)
        touched = inst.labels[grown][near]
        touched = touched[(touched > 0) & (touched != OTHER)]
        if touched.size:
            k_v = int(np.bincount(touched).argmax()) - 1
            rel = pts.mean(axis=0) - inst.centroids[k_v]
            if abs(rel @ cranial) < 25.0:  # a rib sits at its vertebra's height; the ilium lower
                found.setdefault(k_v, set()).add(bool(rel[0] > 0))
    return sorted(k for k, sides in found.items() if len(sides) == 2)  # ribs on both sides


def attached_ribs(inst: Instances, affine: npt.ArrayLike, reach_mm: float = 55.0) -> list[int]:
    """0-based indices of instances holding bone farther than ``reach_mm`` from their centroid
    on both sides (ribs fused to the vertebra in the mask; lumbar transverse processes reach
    about 40–45 mm)."""
    aff = np.asarray(affine, dtype=np.float64)
    voxel_mm3 = float(np.prod(voxel_spacing(aff)))
    lateral = np.array([1.0, 0.0, 0.0])  # patient left-right (LPS x)
    found = []
    boxes = ndimage.find_objects(inst.labels)
    for k in range(len(inst.centroids)):
        box = boxes[k] if k < len(boxes) else None
        pts = index_to_mm(aff, label_voxels(inst.labels, k + 1, box)[::2])
        off = (pts - inst.centroids[k]) @ lateral
        far_left = float((off > reach_mm).sum()) * 2 * voxel_mm3
        far_right = float((off < -reach_mm).sum()) * 2 * voxel_mm3
        if min(far_left, far_right) > 150.0:
            found.append(k)
    return found


def touches_border(inst: Instances, k: int) -> bool:
    """Whether instance ``k`` (0-based) reaches a face of the grid (cut by the field of view)."""
    mine = inst.labels == k + 1
    return any(
        bool(np.take(mine, 0, axis=a).any() or np.take(mine, -1, axis=a).any())
        for a in range(mine.ndim)
    )


def label_levels(inst: Instances, affine: npt.ArrayLike, cranial: FloatArray) -> LevelAssignment:
    """Name every instance (cranial first) with a level and a confidence."""
    n = len(inst.centroids)
    if n < 3:
        raise NotApplicableError(
            f"no spinal column: {n} vertebral body candidate(s) in a stack, need at least 3", n
        )
    sacrum = is_sacrum(inst)
    candidates = set(rib_bearing(inst, affine, cranial)) | set(attached_ribs(inst, affine))
    ribs = sorted(k for k in candidates if not (sacrum and k == n - 1))
    warnings: list[str] = []
    if sacrum:
        names, conf, warnings = _from_sacrum(inst, ribs)
    elif ribs:
        names = _count_up(n, max(ribs), "T12")
        conf = 0.75
        warnings.append("no sacrum in view: levels counted from the last rib-bearing vertebra")
    else:
        raise NotApplicableError(
            "cannot name the vertebrae: neither the sacrum nor a rib-bearing vertebra is in view"
        )
    return LevelAssignment(tuple(names), tuple([conf] * n), tuple(warnings))


def _from_sacrum(inst: Instances, ribs: list[int]) -> tuple[list[str], float, list[str]]:
    """Names counted up from the sacrum (the last instance), checked against the last
    rib-bearing vertebra when there is one; the confidence and warnings that go with them."""
    n = len(inst.centroids)
    if ribs:
        lumbar = n - 1 - (max(ribs) + 1)
        if lumbar == 5:
            return _count_up(n, n - 1, "S1"), 0.98, []
        kind = "a sixth lumbar vertebra" if lumbar == 6 else "a sacralised L5"
        warning = (
            f"{lumbar} mobile vertebrae between the last rib-bearing vertebra and the "
            f"sacrum: transitional anatomy ({kind}); levels counted from the sacrum, verify"
        )
        return _count_up(n, n - 1, "S1", with_l6=lumbar == 6), 0.6, [warning]
    names = _count_up(n, n - 1, "S1")
    if n - 1 >= 6 and not touches_border(inst, n - 7):
        # a T12 whole in view shows its twelfth ribs; a rib-less one is likely lumbar
        warning = (
            f"{n - 1} mobile vertebrae above the sacrum and none bears ribs: the one counted "
            "as T12 is whole in view but rib-less, so it may be a sixth lumbar vertebra (then "
            "each name is one level too high: the vertebra named L5 is L6, L4 is L5, ..., "
            "T12 is L1); levels counted from the sacrum, verify"
        )
        return names, 0.6, [warning]
    warning = (
        "no ribs in view: levels counted from the sacrum only (a sixth lumbar vertebra "
        "or a sacralised L5 cannot be ruled out; verify the level names)"
    )
    return names, 0.9, [warning]


def _count_up(n: int, anchor: int, anchor_level: str, with_l6: bool = False) -> list[str]:
    order = list(LUMBAR_ORDER if with_l6 else [x for x in LUMBAR_ORDER if x != "L6"])
    base = order.index(anchor_level)
    names = []
    for k in range(n):
        pos = base + (k - anchor)
        names.append(order[pos] if 0 <= pos < len(order) else f"X{k}")
    return names

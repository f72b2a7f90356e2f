"""The vertebral body of one vertebra mask, and the native labels that keep a dark body whole.

Arrays are indexed [slice, row, col]; ``spacing`` is the voxel size (mm) along those axes; the
affines map indices to DICOM LPS mm.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.errors import InferenceError
from inference.geometry import BoolArray, FloatArray, grown_box
from inference.verse import LEVEL_TO_LABEL


def extract_body(mask: BoolArray, spacing: FloatArray) -> BoolArray:
    """The vertebral body of one vertebra mask: a morphological opening at the body's scale.

    The erosion radius is 70% of the largest inscribed radius (which lies in the body), so the
    pedicles and posterior elements, thinner than the body, fall away.
    """
    dt = ndimage.distance_transform_edt(mask, sampling=spacing)
    radius = 0.7 * float(dt.max())
    core = dt > radius
    labels, n = ndimage.label(core)
    if n == 0:
        raise InferenceError("vertebra mask too thin to find a body")
    seed = np.unravel_index(int(np.argmax(dt)), dt.shape)
    core = labels == labels[seed]
    grown = ndimage.distance_transform_edt(~core, sampling=spacing) <= radius + 0.5
    body: BoolArray = grown & mask
    return body


def label_on_grid(
    labels: npt.NDArray[np.integer[Any]],
    label_affine: npt.ArrayLike,
    label_id: int,
    shape: tuple[int, ...],
    affine: npt.ArrayLike,
    *,
    label_box: tuple[slice, ...] | None,
) -> tuple[tuple[slice, slice, slice], FloatArray] | None:
    """Label ``label_id`` of ``labels`` (grid of ``label_affine``; ``label_box``: its box from
    ``ndimage.find_objects``, None where absent) resampled onto the grid of ``affine`` and
    ``shape`` (both index → LPS mm; the same axes, e.g. the native input and the 1 mm working
    grid): the box (indices of the target grid) and the label's fraction (linear interpolation)
    in it; None where the label is absent or falls outside the target grid."""
    if label_box is None:
        return None
    nat = grown_box(label_box, 2, labels.shape)
    found = labels[nat] == label_id
    # target index → label-grid index
    to_label = np.linalg.inv(np.asarray(label_affine, dtype=np.float64)) @ np.asarray(
        affine, dtype=np.float64
    )
    corners = (
        np.array([[s.start for s in nat], [s.stop - 1 for s in nat]], dtype=np.float64)
        @ np.linalg.inv(to_label)[:3, :3].T
        + np.linalg.inv(to_label)[:3, 3]
    )
    w0 = np.maximum(np.ceil(corners.min(axis=0) - 1e-6).astype(int), 0)
    w1 = np.minimum(np.floor(corners.max(axis=0) + 1e-6).astype(int) + 1, shape)
    if np.any(w1 <= w0):
        return None
    box = (
        slice(int(w0[0]), int(w1[0])),
        slice(int(w0[1]), int(w1[1])),
        slice(int(w0[2]), int(w1[2])),
    )
    start = np.array([s.start for s in nat], dtype=np.float64)
    frac: FloatArray = ndimage.affine_transform(
        found.astype(np.float32),
        to_label[:3, :3],
        offset=to_label[:3, :3] @ w0 + to_label[:3, 3] - start,
        output_shape=tuple(int(b - a) for a, b in zip(w0, w1, strict=True)),
        order=1,
    ).astype(np.float64)
    return box, frac


def with_native_labels(
    instances: npt.NDArray[np.uint8],
    affine: npt.ArrayLike,
    levels: Sequence[str],
    native: npt.NDArray[np.uint8],
    native_affine: npt.ArrayLike,
) -> npt.NDArray[np.uint8]:
    """The working-grid ``instances`` (instance ``k + 1`` is ``levels[k]``) with the background
    voxels that the native-grid label map ``native`` (VerSe ids) gives a vertebra added to that
    vertebra's instance (linear fraction > 0.5, the largest where two compete; see
    :func:`native_fill`). S1 is left as it is (:data:`UNFILLED`).

    The native labels' border is put on the input grid from the CT's profile
    (:func:`inference.segment.grid.to_native`), holes and notches closed: a body whose
    cancellous bone reads 0–100 HU (fatty, osteopenic marrow) keeps its back there, while the
    working grid's bone mask loses it (the real 3 mm CT: the back third of L1–L3 and L5), and
    the body, its frame and the pedicle search behind it need the whole body.
    """
    aff = np.asarray(affine, dtype=np.float64)
    out = instances.copy()
    empty = instances == 0
    best = np.zeros(out.shape, dtype=np.float64)
    boxes = ndimage.find_objects(native)  # one pass over the native grid for every label
    for k, level in enumerate(levels):
        label = LEVEL_TO_LABEL.get(level)
        if label is None or level in UNFILLED:
            continue
        found = boxes[label - 1] if label <= len(boxes) else None
        got = label_on_grid(native, native_affine, label, out.shape, aff, label_box=found)
        if got is None:
            continue
        box, frac = got
        take = native_fill(frac, native_affine, aff) & (frac > best[box]) & empty[box]
        out[box][take] = k + 1
        best[box][take] = frac[take]
    return out


# S1 keeps its working-grid mask: filled from the native labels, its screws' entries and tips
# lay 3.8 -> 5.7 and 6.8 -> 8.5 mm from the reference (s8_pivots' cached segmentations of bench
# seeds 1, 2, 6, 8, 11, 16; the S1 body is fused below, not the dark-notch case)
UNFILLED = frozenset({"S1"})


def native_fill(frac: FloatArray, native_affine: npt.ArrayLike, affine: npt.ArrayLike) -> BoolArray:
    """Where a label's fraction ``frac`` (on the grid of ``affine``) is > 0.5 and stays so for
    one native voxel less one working voxel either way along the native grid's coarsest axis.

    On coarse slices the native label's top and bottom are steps of the slice spacing: added
    whole, they threw the endplate fits (3 mm bench phantoms 6, 11, 16, cached segmentations:
    frames 1.80° off the true cranial axis before any fill, 2.74° with the whole label, seed
    6's L3 0.7° → 7.6°; 1.44° kept this far inside), while the notch at the back of a dark body
    runs along that axis and is filled all the same.
    """
    inside: BoolArray = frac > 0.5
    native_sp = np.linalg.norm(np.asarray(native_affine, dtype=np.float64)[:3, :3], axis=0)
    work_sp = np.linalg.norm(np.asarray(affine, dtype=np.float64)[:3, :3], axis=0)
    axis = int(np.argmax(native_sp))
    steps = round(float(native_sp[axis] / work_sp[axis])) - 1
    if steps < 1:
        return inside
    shape = [1, 1, 1]
    shape[axis] = 2 * steps + 1
    structure = np.ones(shape, dtype=bool)
    eroded: BoolArray = ndimage.binary_erosion(inside, structure=structure, border_value=0)
    return eroded

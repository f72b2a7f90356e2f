"""Rasterise the anatomy on a CT grid: torso, soft tissue, bone with cortex, blur and noise.

Arrays are indexed ``[slice, row, column]``; ``affine`` maps ``(slice, row, column, 1)`` to DICOM
LPS mm (column 0 = slice step, column 1 = row step, column 2 = column step, column 3 = first
voxel centre). Signed distances are evaluated only inside each part's bounding box.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.phantom.lumbar import rotation
from inference.phantom.model import Anatomy, BonePart, PartId
from inference.phantom.shapes import FloatArray, Shape, ellipse_sdf
from inference.phantom.spec import PhantomSpec
from inference.phantom.tissue import visceral_fat_field, visceral_fat_grid

AIR_HU = -1000.0
FAT_HU = -95.0
VISCERA_HU = 38.0
SKIN_HU = 20.0
JOINT_HU = 30.0

Block = tuple[slice, slice, slice]


@dataclass(slots=True, eq=False)
class Raster:
    """The arrays being painted."""

    hu: npt.NDArray[np.float32]
    labels: npt.NDArray[np.uint8]
    parts: npt.NDArray[np.uint8]
    affine: FloatArray
    ramp_mm: float


def grid(spec: PhantomSpec, anatomy: Anatomy) -> tuple[FloatArray, tuple[int, int, int]]:
    """Affine and shape of the acquisition grid covering the anatomy (or ``spec.shape``)."""
    dz, dr, dc = spec.spacing_mm
    lo, hi = anatomy.z_range
    if spec.shape is None:
        n_in = math.ceil(spec.fov_mm / min(dr, dc))
        shape = (math.ceil((hi - lo + 30.0) / dz), n_in, n_in)
    else:
        shape = (int(spec.shape[0]), int(spec.shape[1]), int(spec.shape[2]))
    centre = np.array([0.0, 0.0, (lo + hi) / 2]) + np.asarray(spec.centre_offset_mm)
    if spec.centre_mm is not None:
        centre = np.asarray(spec.centre_mm, dtype=np.float64)
    ox, oy, oz = spec.oblique_deg
    rot = rotation(np.array([0.0, 0.0, 1.0]), oz) @ rotation(np.array([0.0, 1.0, 0.0]), oy)
    rot = rot @ rotation(np.array([1.0, 0.0, 0.0]), ox)
    dirs = rot @ np.array([[0.0, 0.0, 1.0], [0.0, 1.0, 0.0], [1.0, 0.0, 0.0]]).T
    affine = np.eye(4)
    affine[:3, :3] = dirs * np.array([dz, dr, dc])
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    return affine, shape


def block_of(
    affine: FloatArray, shape: tuple[int, ...], lo: FloatArray, hi: FloatArray
) -> Block | None:
    """Index block (slices) covering the LPS box ``lo``–``hi``; ``None`` when outside the grid."""
    lo = np.maximum(lo, -1e5)
    hi = np.minimum(hi, 1e5)
    corners = np.array(
        [[x, y, z, 1.0] for x in (lo[0], hi[0]) for y in (lo[1], hi[1]) for z in (lo[2], hi[2])]
    )
    idx = (np.linalg.inv(affine) @ corners.T)[:3]
    start = np.maximum(np.floor(idx.min(axis=1)).astype(int), 0)
    stop = np.minimum(np.ceil(idx.max(axis=1)).astype(int) + 1, shape)
    if np.any(stop <= start):
        return None
    return (slice(start[0], stop[0]), slice(start[1], stop[1]), slice(start[2], stop[2]))


def points(affine: FloatArray, block: Block) -> FloatArray:
    """LPS coordinates (N, 3) of the voxel centres of ``block`` in C order."""
    axes = [np.arange(b.start, b.stop, dtype=np.float64) for b in block]
    out = np.broadcast_to(affine[:3, 3], (1, 1, 1, 3)).copy()
    for k in range(3):
        out = out + axes[k].reshape([-1 if j == k else 1 for j in range(3)] + [1]) * affine[:3, k]
    return out.reshape(-1, 3)


def _occ(d: FloatArray, ramp: float) -> FloatArray:
    return np.asarray(np.clip(0.5 - d / ramp, 0.0, 1.0))


def _outline(
    anatomy: Anatomy, p: FloatArray
) -> tuple[FloatArray, FloatArray, FloatArray, FloatArray]:
    """Centre-relative x, y and semi-axes of the body outline at LPS points ``p``."""
    if not anatomy.torso_knots:
        ax, ay = anatomy.torso_radii
        q = p - anatomy.torso_centre
        return q[:, 0], q[:, 1], np.full(len(p), ax), np.full(len(p), ay)
    knots = np.asarray(anatomy.torso_knots)
    z = p[:, 2]
    cx, cy, ax, ay = (np.interp(z, knots[:, 0], knots[:, k]) for k in (1, 2, 3, 4))
    return p[:, 0] - cx, p[:, 1] - cy, ax, ay


def paint_torso(r: Raster, anatomy: Anatomy, seed: int, chunk: int = 8) -> None:
    """Air, skin, subcutaneous fat and viscera: an elliptic body outline along LPS z."""
    fat_grid = visceral_fat_grid(seed)
    for s0 in range(0, r.hu.shape[0], chunk):
        block = (
            slice(s0, min(s0 + chunk, r.hu.shape[0])),
            slice(0, r.hu.shape[1]),
            slice(0, r.hu.shape[2]),
        )
        p = points(r.affine, block)
        x, y, ax, ay = _outline(anatomy, p)
        d_out = ellipse_sdf(x, y, ax, ay)
        d_in = ellipse_sdf(x, y, ax - anatomy.fat_mm, ay - anatomy.fat_mm * 0.8)
        hu = AIR_HU + (SKIN_HU - AIR_HU) * _occ(d_out, r.ramp_mm)
        hu += (FAT_HU - SKIN_HU) * _occ(d_out + 2.0, r.ramp_mm)
        fat = visceral_fat_field(p, fat_grid) * anatomy.visceral_fat
        viscera = VISCERA_HU + (FAT_HU - VISCERA_HU) * fat
        hu += (viscera - FAT_HU) * _occ(d_in, r.ramp_mm)
        r.hu[block] = hu.reshape(r.hu[block].shape)


def paint_soft(r: Raster, shape: Shape, hu: float) -> None:
    block = block_of(r.affine, r.hu.shape, *shape.bounds())
    if block is None:
        return
    occ = _occ(shape.sdf(points(r.affine, block)), r.ramp_mm).reshape(r.hu[block].shape)
    r.hu[block] = r.hu[block] * (1 - occ) + hu * occ


def trabecular_texture(shape: tuple[int, ...], r: Raster, seed: list[int]) -> FloatArray:
    """Multiplicative cancellous texture: smoothed noise (≈ 1 mm grain), mean 1, ±25 %."""
    rng = np.random.default_rng(seed)
    noise = rng.standard_normal(shape, dtype=np.float32)
    spacing = np.linalg.norm(r.affine[:3, :3], axis=0)
    sigma = [max(0.6 / float(s), 0.3) for s in spacing]
    tex = ndimage.gaussian_filter(noise, sigma)
    tex /= max(float(tex.std()), 1e-6)
    return np.asarray(1.0 + 0.25 * np.clip(tex, -3.0, 3.0))


def paint_bone(
    r: Raster, parts: tuple[BonePart, ...], label: int, hu: tuple[float, float], seed: list[int]
) -> None:
    """Paint one bone (union of ``parts``): cortex of each part's thickness, cancellous inside."""
    boxes = [
        b for part in parts for b in [block_of(r.affine, r.hu.shape, *part.shape.bounds())] if b
    ]
    if not boxes:
        return
    block = tuple(
        slice(min(b[k].start for b in boxes), max(b[k].stop for b in boxes)) for k in range(3)
    )
    shp = tuple(s.stop - s.start for s in block)
    d = np.full(shp, np.inf)
    thick = np.zeros(shp)
    body = np.full(shp, np.inf)
    marks: list[tuple[Block, npt.NDArray[np.bool_], int]] = []
    for part in parts:
        sub = block_of(r.affine, r.hu.shape, *part.shape.bounds())
        if sub is None:
            continue
        local = (
            slice(sub[0].start - block[0].start, sub[0].stop - block[0].start),
            slice(sub[1].start - block[1].start, sub[1].stop - block[1].start),
            slice(sub[2].start - block[2].start, sub[2].stop - block[2].start),
        )
        pts = points(r.affine, sub)
        dp = part.shape.sdf(pts).reshape(d[local].shape)
        better = dp < d[local]
        d[local] = np.where(better, dp, d[local])
        t: float | FloatArray = part.cortex_mm
        if part.thin_wall is not None:
            t = part.thin_wall.thickness(pts, part.cortex_mm).reshape(dp.shape)
        thick[local] = np.where(better, t, thick[local])
        if part.name == "body":
            body[local] = dp
        if part.part_id:
            marks.append((local, dp < 0, part.part_id))
    occ = _occ(d, r.ramp_mm)
    inner = _occ(d + thick, r.ramp_mm)
    cortical, cancellous = hu
    marrow = cancellous * trabecular_texture(d.shape, r, seed)
    sub_hu = r.hu[block]
    r.hu[block] = sub_hu * (1 - occ) + cortical * (occ - inner) + marrow * inner
    if label:
        lab = r.labels[block]
        lab[d < 0] = label
    for local, inside, pid in marks:
        target = r.parts[block][local]
        target[inside & (body[local] > 0)] = pid


def paint_joint_spaces(r: Raster, anatomy: Anatomy) -> None:
    """Mark facet joint spaces (non-bone voxels) in the parts map."""
    for joint in anatomy.joints:
        block = block_of(r.affine, r.hu.shape, *joint.space.bounds())
        if block is None:
            continue
        inside = (joint.space.sdf(points(r.affine, block)) < 0).reshape(r.hu[block].shape)
        pid = PartId.FACET_JOINT_LEFT if joint.side == "left" else PartId.FACET_JOINT_RIGHT
        target = r.parts[block]
        target[inside & (r.labels[block] == 0)] = int(pid)


def blur_and_noise(hu: npt.NDArray[np.float32], spec: PhantomSpec) -> npt.NDArray[np.float32]:
    """Scanner point spread (Gaussian; slice profile from the slice spacing) plus noise."""
    dz, dr, dc = spec.spacing_mm
    sig_mm = (max(spec.blur_mm, 0.4 * dz), spec.blur_mm, spec.blur_mm)
    sigma = tuple(s / d for s, d in zip(sig_mm, (dz, dr, dc), strict=True))
    gain = 1.0
    for s in sigma:
        gain *= max(1.0, 2.0 * math.sqrt(math.pi) * s) ** 0.5
    if spec.noise_hu > 0:
        rng = np.random.default_rng([spec.seed, 0xC7])
        hu += rng.standard_normal(hu.shape, dtype=np.float32) * np.float32(spec.noise_hu * gain)
    out = ndimage.gaussian_filter(hu, sigma=sigma, mode="nearest")
    np.clip(out, -1024.0, 3071.0, out=out)
    return np.asarray(out, dtype=np.float32)

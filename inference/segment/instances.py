"""Vertebra instances from a bone mask on the working grid ([slice, row, col], affine → LPS mm).

Bodies are the thick parts of the bone (inscribed radius ≥ ``core_mm``); discs split them. The
vertebral bodies along the spine form a chain of such cores. Every bone voxel then goes to the
core it reaches along the widest bone path (a watershed on the distance transform), so posterior
elements follow their own pedicles and thin facet contacts become the borders. A spinous
process that growth split between two vertebrae (thick slices merge it with the laminae below)
is then given whole to the vertebra at its cranial end, every arch is seeded on its own canal
roof (``roofs.py``) and every articular process on its own side of its facet joint
(``facets.py``), and the growth run again.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.errors import NotApplicableError
from inference.geometry import (
    BoolArray,
    FloatArray,
    index_to_mm,
    label_voxels,
    mm_to_index,
    unit,
    voxel_spacing,
)
from inference.segment.assign import OTHER, bone_weights, keep_connected
from inference.segment.column import body_mask, split_at_endplates, trim_discs
from inference.segment.facets import gap_depth
from inference.segment.growth import grow_vertebrae
from inference.workers import fork_map, worker_count

logger = logging.getLogger(__name__)

# a core centred this far in front of the nearest body's centroid is not bone of the column
IN_FRONT_MM = 25.0
# a vertebra whose body core below is this many times larger (the sacral base: S1's body,
# alae and articular processes) gets its canal's ring seeded (roofs.py): that bone reaches
# within a few mm of its pedicles on thick slices (seed 11, 3 mm: L5's arch went to S1); on
# every vertebra the rings cost 0.004-0.006 at L2/L3 of seed 9 (1.25 mm, SAPs taken by the
# vertebra above)
RING_BELOW_RATIO = 2.0
# parts of a core that an opening cuts off and that are this small beside its largest part are
# not markers (see core_trunk); keeping only the opened largest part thinned the real CT's
# low-density T12 core and L1 took T12's lower slices (vs TS v2 T12/L1 0.859/0.896 -> 0.719/0.792)
TRUNK_MIN_FRACTION = 0.1


@dataclass(frozen=True, slots=True)
class Instances:
    """Vertebra instances ordered cranial → caudal.

    ``labels`` holds 1..n for the vertebrae (1 = most cranial), ``OTHER`` for other bone that
    reached no vertebra, 0 for background. ``centroids`` are body-core centroids (patient mm);
    ``core_extent_mm`` is each core's length along the chain.
    """

    labels: npt.NDArray[np.uint8]
    centroids: FloatArray
    core_extent_mm: FloatArray
    width_mm: FloatArray


def _walk(
    cents: FloatArray, big: BoolArray, cranial: FloatArray, start: int, probe: Probe
) -> list[int]:
    """Chain of cores through ``start``: step up and down to the nearest big core in reach; when
    no core centroid is in reach (a sacrum fused with the ilia in the mask) take the core found
    in a ball one vertebra further along the column."""
    chain = [start]
    for sign in (1.0, -1.0):
        cur, heading = start, sign * cranial
        while True:
            rel = cents - cents[cur]
            along = sign * (rel @ cranial)
            across = np.linalg.norm(rel - np.outer(rel @ cranial, cranial), axis=1)
            ok = big & (along > 20.0) & (along < 60.0) & (across < 0.8 * along + 10.0)
            ok[chain] = False
            if ok.any():
                nxt = int(np.argmin(np.where(ok, along + across, np.inf)))
            else:
                nxt = probe(cents[cur] + 32.0 * heading, chain)
                if nxt < 0 or sign * ((cents[nxt] - cents[cur]) @ cranial) < 20.0:
                    break
            heading = unit(cents[nxt] - cents[cur]) if ok.any() else heading
            cur = nxt
            chain.insert(0 if sign > 0 else len(chain), cur)
    return chain


class Probe:
    """Which core (0-based) occupies most of a 15 mm ball around a point, excluding some."""

    def __init__(self, cores: npt.NDArray[np.int32], affine: FloatArray, big: BoolArray) -> None:
        self.cores, self.affine, self.big = cores, affine, big
        g = np.arange(-15.0, 15.1, 3.0)
        ball = np.stack(np.meshgrid(g, g, g, indexing="ij"), axis=-1).reshape(-1, 3)
        self.ball = ball[np.linalg.norm(ball, axis=1) <= 15.0]

    def __call__(self, point: FloatArray, exclude: list[int]) -> int:
        idx = np.rint(mm_to_index(self.affine, point + self.ball)).astype(int)
        inside = np.all((idx >= 0) & (idx < self.cores.shape), axis=1)
        hits = self.cores[tuple(idx[inside].T)] - 1
        hits = hits[(hits >= 0)]
        hits = hits[self.big[hits] & ~np.isin(hits, exclude)]
        return int(np.bincount(hits).argmax()) if hits.size else -1


def _chain(
    cents: FloatArray, vols: FloatArray, cranial: FloatArray, spine: FloatArray, probe: Probe
) -> list[int]:
    """Indices of the cores forming the spinal column, cranial first.

    Every big core near the spine axis through ``spine`` seeds a walk; the longest chain (then
    the largest total volume) wins: the column is the longest stack of thick bones.
    """
    big = vols >= max(500.0, 0.1 * float(np.median(np.sort(vols)[-6:])))
    rel0 = cents - spine
    off_axis = np.linalg.norm(rel0 - np.outer(rel0 @ cranial, cranial), axis=1)
    seeds = np.nonzero(big & (off_axis < 80.0))[0]
    if seeds.size == 0:
        seeds = np.array([int(np.argmax(vols))])
    best: list[int] = []
    for start in seeds:
        chain = _walk(cents, big, cranial, int(start), probe)
        if (len(chain), vols[chain].sum()) > (len(best), vols[best].sum() if best else 0.0):
            best = chain
    return best


def separate_vertebrae(
    bone: BoolArray,
    affine: npt.ArrayLike,
    cranial: FloatArray,
    spine: FloatArray,
    core_radii: tuple[float, ...] = (8.0, 7.0, 6.0, 5.0),
    *,
    hu: npt.NDArray[np.float32] | None = None,
) -> Instances:
    """Split ``bone`` into vertebra instances.

    ``cranial`` is the patient-frame cranial direction, ``spine`` a point near the spinal axis;
    body cores are tried at each inscribed radius of ``core_radii`` and the longest chain wins.
    With ``hu`` (same grid), cores come from :func:`body_mask` (marrow filled inside axial
    cortical rings) and that mask is what gets labelled.
    """
    aff = np.asarray(affine, dtype=np.float64)
    spacing = voxel_spacing(aff)
    smooth = depth = weights = None
    if hu is not None:
        with ThreadPoolExecutor(1, thread_name_prefix="hu-maps") as pool:
            # what only the CT decides, in a thread while the body mask is made
            later = pool.submit(_hu_maps, hu, spacing) if worker_count() >= 2 else None
            bone = body_mask(hu, bone, float(spacing.mean()))
            smooth, depth, weights = later.result() if later is not None else _hu_maps(hu, spacing)
    dt = ndimage.distance_transform_edt(bone, sampling=spacing).astype(np.float32)
    tried = fork_map(
        lambda i: _cores_at(dt, core_radii[i], smooth, aff=aff, cranial=cranial, spine=spine),
        len(core_radii),
    )
    best: tuple[int, float, npt.NDArray[np.int32], FloatArray, list[int]] | None = None
    for found in tried:
        if found is not None and (best is None or len(found[4]) > len(best[4])):
            best = found
    if best is None:
        raise NotApplicableError("no vertebral bodies found (no bone thick enough)")
    _, radius, cores, cents, chain = best
    logger.debug("vertebral body cores at %.1f mm: %d in the chain", radius, len(chain))
    markers = np.zeros(bone.shape, dtype=np.int16)
    for rank, comp in enumerate(chain, start=1):
        markers[cores == comp + 1] = rank
    ringed = above_a_base(markers)
    boxes = ndimage.find_objects(cores)
    for rank in ringed:  # the sacral base below: its pieces beyond a thin neck are not seeds
        comp = chain[rank]
        markers[(markers == rank + 1) & ~core_trunk(cores, comp + 1, boxes[comp])] = 0
    core_rank = markers.copy()
    # thick bone away from the column (ilium, femoral heads) or in front of it (a contrast-filled
    # aorta the bone mask took in) competes as OTHER; thick posterior elements near the column
    # are left to the nearest vertebral body
    far = _far_from_chain(cents, chain, 45.0) | _in_front_of_chain(cents, chain, cranial)
    lut = np.zeros(int(cores.max()) + 1, dtype=bool)
    lut[1:] = far
    markers[lut[cores] & (markers == 0)] = OTHER
    labels = grow_vertebrae(
        bone,
        markers,
        aff,
        cents[chain],
        cranial,
        hu=hu,
        depth=depth,
        weights=weights,
        ringed=ringed,
    )
    if smooth is not None:
        labels = trim_discs(labels, core_rank, smooth, spacing)
    out = keep_connected(labels.astype(np.uint8), markers, len(chain))
    extents, widths = _shape_stats(
        out, len(chain), aff=aff, cranial=cranial, cores=cores, chain=chain
    )
    return Instances(out, cents[chain], extents, widths)


def _hu_maps(
    hu: npt.NDArray[np.float32], spacing: FloatArray
) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.float32], npt.NDArray[np.float32]]:
    """The CT after a 1 mm Gaussian, its gap depth (:func:`gap_depth`) and the growth's
    weights (:func:`bone_weights`)."""
    smooth = ndimage.gaussian_filter(hu, sigma=1.0 / spacing).astype(np.float32)
    depth = gap_depth(hu)
    return smooth, depth, bone_weights(hu, depth)


def _cores_at(
    dt: npt.NDArray[np.float32],
    radius: float,
    smooth: npt.NDArray[np.float32] | None,
    *,
    aff: FloatArray,
    cranial: FloatArray,
    spine: FloatArray,
) -> tuple[int, float, npt.NDArray[np.int32], FloatArray, list[int]] | None:
    """Body cores of inscribed radius ≥ ``radius`` (split at the endplates with ``smooth``),
    their centroids and the chain of them along the spine; None without any core."""
    cores, n = ndimage.label(dt >= radius)
    if smooth is not None:
        cores, n = split_at_endplates(cores, smooth, float(np.prod(voxel_spacing(aff))))
    if n == 0:
        return None
    vols, cents = _core_stats(cores, int(n), aff)
    big = vols >= max(500.0, 0.1 * float(np.median(np.sort(vols)[-6:])))
    chain = _chain(cents, vols, cranial, spine, Probe(cores.astype(np.int32), aff, big))
    return int(n), radius, cores.astype(np.int32), cents, chain


def above_a_base(core_rank: npt.NDArray[np.int16]) -> set[int]:
    """Ranks (1 = most cranial) of the vertebrae whose body-core marker below (rank + 1) holds
    at least ``RING_BELOW_RATIO`` times as many voxels as their own: the sacral base."""
    sizes = np.bincount(core_rank[core_rank > 0].ravel()).astype(np.float64)[1:]
    big = np.nonzero(sizes[1:] >= RING_BELOW_RATIO * np.maximum(sizes[:-1], 1.0))[0] + 1
    return {int(k) for k in big}


def core_trunk(
    cores: npt.NDArray[np.int32], value: int, box: tuple[slice, ...] | None
) -> BoolArray:
    """Core ``value`` without its small far pieces: the parts an opening with the 6-neighbour
    cross cuts off that hold less than ``TRUNK_MIN_FRACTION`` of its largest part are taken
    out with the core voxels next to them (a 3x3x3 dilation), and of the rest only what stays
    connected to the large parts is kept.

    A core can reach into a neighbour's bone through a thin neck of thick bone (3 mm slices:
    S1's sacral base fused with L5's 16 mm pedicles across the facet); the pieces beyond the
    neck would seed the neighbour's bone with this vertebra's label, so they are left to the
    growth. A core with no such piece is kept whole (thin parts of a low-density body too).
    ``box`` is the core's bounding box (``ndimage.find_objects``)."""
    out: BoolArray = np.zeros(cores.shape, dtype=bool)
    if box is None:
        return out
    shape = cores.shape
    pad = tuple(
        slice(max(b.start - 1, 0), min(b.stop + 1, n)) for b, n in zip(box, shape, strict=True)
    )
    mine = cores[pad] == value
    cross = ndimage.generate_binary_structure(3, 1)
    parts, n = ndimage.label(ndimage.binary_opening(mine, cross))
    sizes = np.bincount(parts.ravel())
    sizes[0] = 0
    small = (sizes > 0) & (sizes < TRUNK_MIN_FRACTION * sizes.max()) if n else sizes > 0
    if not small.any():
        out[pad] = mine
        return out
    cut = ndimage.binary_dilation(small[parts], np.ones((3, 3, 3), dtype=bool))
    rest, _ = ndimage.label(mine & ~cut)
    big = np.unique(rest[(sizes > 0)[parts] & ~small[parts] & (rest > 0)])
    out[pad] = np.isin(rest, big) & (rest > 0)
    return out


def _core_stats(
    cores: npt.NDArray[np.int32], n: int, aff: FloatArray
) -> tuple[FloatArray, FloatArray]:
    """Volumes (mm³) and centroids (patient mm) of labels 1..n, by bincount over core voxels."""
    where = np.nonzero(cores)
    ids = cores[where]
    counts = np.bincount(ids, minlength=n + 1)[1:].astype(np.float64)
    mean_idx = (
        np.stack(
            [np.bincount(ids, weights=w.astype(np.float64), minlength=n + 1)[1:] for w in where],
            axis=1,
        )
        / np.maximum(counts, 1.0)[:, None]
    )
    vols: FloatArray = counts * float(np.prod(voxel_spacing(aff)))
    return vols, index_to_mm(aff, mean_idx)


def _far_from_chain(cents: FloatArray, chain: list[int], limit_mm: float) -> BoolArray:
    """Cores whose centroid is farther than ``limit_mm`` from every vertebral body in the chain."""
    d = np.linalg.norm(cents[:, None, :] - cents[chain][None, :, :], axis=2).min(axis=1)
    out: BoolArray = d > limit_mm
    return out


def _in_front_of_chain(cents: FloatArray, chain: list[int], cranial: FloatArray) -> BoolArray:
    """Cores centred more than ``IN_FRONT_MM`` in front of the nearest vertebral body's centroid
    (anterior = away from the posterior elements: −y in LPS when cranial is +z)."""
    lateral = unit(np.cross(cranial, [0.0, 1.0, 0.0]))
    anterior = -unit(np.cross(lateral, cranial))
    rel = cents[:, None, :] - cents[chain][None, :, :]
    nearest = np.argmin(np.linalg.norm(rel, axis=2), axis=1)
    ahead = np.einsum("ij,j->i", rel[np.arange(len(cents)), nearest], anterior)
    out: BoolArray = ahead > IN_FRONT_MM
    out[chain] = False
    return out


def _shape_stats(
    labels: npt.NDArray[np.uint8],
    n: int,
    *,
    aff: FloatArray,
    cranial: FloatArray,
    cores: npt.NDArray[np.int32],
    chain: list[int],
) -> tuple[FloatArray, FloatArray]:
    """Core extent along ``cranial`` and instance width across it (mm) for each vertebra."""
    extents = np.zeros(n)
    widths = np.zeros(n)
    core_boxes = ndimage.find_objects(cores)
    label_boxes = ndimage.find_objects(labels)
    for k in range(n):
        pts = index_to_mm(aff, label_voxels(cores, chain[k] + 1, core_boxes[chain[k]]))
        h = pts @ cranial
        extents[k] = float(np.percentile(h, 99) - np.percentile(h, 1))
        allp = index_to_mm(aff, label_voxels(labels, k + 1, label_boxes[k])[::4])
        across = allp - np.outer(allp @ cranial, cranial)
        lat = np.cross(cranial, [0.0, 1.0, 0.0])
        lat = lat / max(np.linalg.norm(lat), 1e-9)
        w = across @ lat
        widths[k] = float(np.percentile(w, 99) - np.percentile(w, 1)) if w.size else 0.0
    return extents, widths

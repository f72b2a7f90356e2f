"""Per-level error breakdown of the weights-free segmentation on the real CT (issue 4).

Run: ``SPINENODE_DATA=/work/shared/data .venv/bin/python bench/bench_real_ct.py``

Data: ../shared/data/real-ct/totalseg-abdomen (3 mm, NIfTI RAS → LPS by the reader), with the
TotalSegmentator v1 and v2 vertebra labels and its body/disc map.
Prints, on the native 3 mm grid:

1. Dice per level (T12, L1–L5, S1) vs v1 and v2 and v1 vs v2; for S1 also the Dice inside the
   slab of slices that v2's S1 segment spans (v2's 26 is the S1 segment only, ours and v1's 92
   the whole sacrum).
2. Per TS v2 level: which of our labels its voxels got (fractions; "other" = bone in our mask
   that reached no vertebra, "none" = not in our mask), split into body (TS's
   body/disc map = 1) and the rest (posterior elements). NB: ``posterior_elements.nii.gz``
   holds per-level vertebral BODIES (ids 19–24 lie wholly inside the body map), so it is not
   used.
3. Misses and excess by distance: TS v2 vertebra voxels outside all of our vertebrae, by
   distance (voxels) to our mask; our voxels outside all of TS's vertebrae, by distance to TS's;
   what the native-grid border rule added and removed against the plain nearest-neighbour map.
4. The body junctions: for each pair of neighbours, the slices where our and TS v2's upper
   vertebra ends and lower one starts and where TS's disc lies (body/disc map = 2, with its
   median HU); slice by slice for T12/L1 (slice index along the native axis 0, cranial up).
5. Where each level's Dice loss lies (L5 by slice too): our missed (FN) and extra (FP) voxels
   by region in the level's frame, against v2, v1 and the voxels both versions agree on
   (``regions``).
6. What an HU rule could recover from L5's transverse processes (``tp_rule``): in the slab and
   rows where TS's L5 processes lie, lateral of its body, the voxels outside our L5 by distance
   to it and by HU, TS's and not TS's, and the best Dice any (distance, HU floor) pair there
   would give with no rule elsewhere.
7. The segment stage's wall time (working grid, bone, instances, labels).
"""

from __future__ import annotations

import os
import sys
import time
from dataclasses import dataclass
from itertools import pairwise
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
from scipy import ndimage  # noqa: E402

from inference.geometry import index_to_mm  # noqa: E402
from inference.nifti import read_nifti  # noqa: E402
from inference.pipeline import segment_volume  # noqa: E402
from inference.segment.assign import OTHER  # noqa: E402
from inference.segment.grid import to_native  # noqa: E402
from inference.verse import LABEL_TO_LEVEL, LEVEL_TO_LABEL  # noqa: E402

DATA = Path(os.environ.get("SPINENODE_DATA", REPO.parent / "shared" / "data"))
LEVELS = ["T12", "L1", "L2", "L3", "L4", "L5", "S1"]
V1_IDS = {"T12": 23, "L1": 22, "L2": 21, "L3": 20, "L4": 19, "L5": 18, "S1": 92}
V2_IDS = {"T11": 33, "T12": 32, "L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "S1": 26}


def dice(a: np.ndarray, b: np.ndarray) -> float:
    s = int(a.sum()) + int(b.sum())
    return float(2.0 * (a & b).sum() / s) if s else float("nan")


def _name(label: int) -> str:
    if label == OTHER:
        return "other"
    return "none" if label == 0 else LABEL_TO_LEVEL.get(label, f"#{label}")


def _shares(ours: np.ndarray, where: np.ndarray) -> str:
    """'L1 0.80, L2 0.15, none 0.05' for the voxels ``where`` (largest first, ≥ 1 %)."""
    got = ours[where]
    if got.size == 0:
        return "-"
    ids, counts = np.unique(got, return_counts=True)
    order = np.argsort(-counts)
    return ", ".join(
        f"{_name(int(ids[i]))} {counts[i] / got.size:.2f}"
        for i in order
        if counts[i] / got.size >= 0.01
    )


def _by_distance(missing: np.ndarray, reference: np.ndarray) -> str:
    """How many ``missing`` voxels lie 1, 2, 3, > 3 voxels from ``reference`` (26-neighbour)."""
    dist = ndimage.distance_transform_edt(~reference)
    d = dist[missing]
    bins = [(d <= 1.0).sum(), ((d > 1.0) & (d <= 2.0)).sum(), ((d > 2.0) & (d <= 3.0)).sum()]
    bins.append((d > 3.0).sum())
    return f"{int(missing.sum())} voxels: ≤1 {bins[0]}, ≤2 {bins[1]}, ≤3 {bins[2]}, >3 {bins[3]}"


def _span(mask: np.ndarray) -> str:
    z = np.nonzero(mask.any(axis=(1, 2)))[0]
    return f"{z.min()}–{z.max()}" if z.size else "-"


def _between(upper: np.ndarray, lower: np.ndarray, disc: np.ndarray) -> np.ndarray:
    """The ``disc`` voxels within 2 voxels of both vertebrae (their disc)."""
    near_u = ndimage.binary_dilation(upper, iterations=2)
    out: np.ndarray = near_u & ndimage.binary_dilation(lower, iterations=2) & disc
    return out


def junctions(ours: np.ndarray, v2: np.ndarray, disc: np.ndarray, hu: np.ndarray) -> None:
    """Where our and TS v2's vertebrae meet, per pair of neighbours (native slices)."""
    print("\nbody junctions (native slices; upper vertebra's span / lower one's / TS disc):")
    for upper, lower in pairwise(LEVELS):
        ou, ol = ours == LEVEL_TO_LABEL[upper], ours == LEVEL_TO_LABEL[lower]
        tu, tl = v2 == V2_IDS[upper], v2 == V2_IDS[lower]
        near = _between(tu, tl, disc)
        z = np.nonzero(near.any(axis=(1, 2)))[0]
        hu_disc = f"{float(np.median(hu[near])):.0f} HU" if z.size else "-"
        print(
            f"  {upper}/{lower}: ours {_span(ou)} / {_span(ol)}, TS {_span(tu)} / {_span(tl)},"
            f" disc {_span(near)} ({hu_disc})"
        )
    upper, lower = "T12", "L1"
    ou, ol = ours == LEVEL_TO_LABEL[upper], ours == LEVEL_TO_LABEL[lower]
    tu, tl = v2 == V2_IDS[upper], v2 == V2_IDS[lower]
    between = _between(tu, tl, disc)
    zs = np.nonzero((ou & ol.any(axis=0)[None]).any(axis=(1, 2)) | (tu | tl).any(axis=(1, 2)))[0]
    both = np.nonzero(((ou | tu).any(axis=(1, 2))) & ((ol | tl).any(axis=(1, 2))))[0]
    if both.size:
        print(f"  {upper}/{lower} slice by slice (voxels ours/TS, TS disc voxels and median HU):")
        for k in range(max(int(both.min()) - 1, int(zs.min())), int(both.max()) + 2):
            d = between[k]
            med = f"{float(np.median(hu[k][d])):.0f}" if d.any() else "-"
            print(
                f"    slice {k}: {upper} {int(ou[k].sum())}/{int(tu[k].sum())},"
                f" {lower} {int(ol[k].sum())}/{int(tl[k].sum())}, disc {int(d.sum())} ({med} HU)"
            )


# regions of a vertebra in its own frame (approximate at 3 mm): mm from the body's mid-plane
# (LPS x) and behind its posterior wall (LPS y, per slice)
MID_MM = 9.0  # the canal, the laminae's junction and the spinous process lie within this
TP_MM = 27.0  # lateral of this: transverse processes (beyond a lumbar body's half-width)
PEDICLE_MM = 12.0  # pedicles: up to this far behind the body's posterior wall
REGIONS = [
    "body",
    "disc",
    "body edge",
    "pedicle",
    "transverse",
    "articular",
    "lamina/spin",
    "canal",
]


def region_map(
    body: np.ndarray, disc: np.ndarray, level_body: np.ndarray, affine: np.ndarray
) -> np.ndarray:
    """Region name index (into ``REGIONS``) of every voxel, in the frame of the vertebra whose
    body voxels are ``level_body`` (TS's body map: ``body``; discs: ``disc``)."""
    idx = np.indices(body.shape).reshape(3, -1).T
    lps = index_to_mm(affine, idx).reshape(*body.shape, 3)
    x0 = float(lps[..., 0][level_body].mean())
    walls = np.full(body.shape[0], np.nan)
    for k in np.nonzero(level_body.any(axis=(1, 2)))[0]:
        walls[k] = float(lps[k][..., 1][level_body[k]].max())  # LPS +y is posterior
    ks = np.nonzero(~np.isnan(walls))[0]
    near = ks[np.abs(np.arange(body.shape[0])[:, None] - ks[None]).argmin(axis=1)]
    behind = lps[..., 1] - walls[near][:, None, None]
    dx = np.abs(lps[..., 0] - x0)
    out = np.full(body.shape, REGIONS.index("articular"), dtype=np.uint8)
    out[dx < MID_MM] = REGIONS.index("lamina/spin")
    out[(dx < MID_MM) & (behind <= PEDICLE_MM)] = REGIONS.index("canal")
    out[(dx >= MID_MM) & (behind <= PEDICLE_MM)] = REGIONS.index("pedicle")
    out[dx >= TP_MM] = REGIONS.index("transverse")
    out[behind < -3.0] = REGIONS.index("body edge")
    out[disc] = REGIONS.index("disc")
    out[body] = REGIONS.index("body")
    return out


@dataclass(frozen=True)
class Scan:
    """The real CT (native grid, LPS affine) and TotalSegmentator's maps on its grid."""

    hu: np.ndarray
    affine: np.ndarray
    v1: np.ndarray
    v2: np.ndarray
    body_disc: np.ndarray


def regions(ours: np.ndarray, scan: Scan) -> None:
    """Per level: FN and FP voxels by region against v2, v1 and the voxels both agree on."""
    v1, v2, body_disc, hu = scan.v1, scan.v2, scan.body_disc, scan.hu
    print(
        "\nDice loss by region (voxels; FN = TS's not our level, FP = ours not TS's; 'both' ="
        " TS v1 and v2 agree; loss = (FN + FP) v2 / (ours + v2)):"
    )
    for level in LEVELS[1:6]:
        mine = ours == LEVEL_TO_LABEL[level]
        t1, t2 = v1 == V1_IDS[level], v2 == V2_IDS[level]
        reg = region_map(body_disc == 1, body_disc == 2, (body_disc == 1) & t2, scan.affine)
        denom = int(mine.sum() + t2.sum())
        print(f"  {level} (Dice v2 {dice(mine, t2):.3f}, v1 {dice(mine, t1):.3f}):")
        print(
            f"    {'region':<12}{'FN v2':>6}{'v1':>5}{'both':>5}{'FP v2':>7}{'v1':>5}{'none':>5}"
            f"{'loss':>7}  FN HU p10/50/90, FN's label in ours"
        )
        for r, name in enumerate(REGIONS):
            at = reg == r
            fn2, fn1, fnb = t2 & ~mine & at, t1 & ~mine & at, t1 & t2 & ~mine & at
            fp2, fp1, fpn = mine & ~t2 & at, mine & ~t1 & at, mine & ~t1 & ~t2 & at
            if not (fn2 | fn1 | fp2 | fp1).any():
                continue
            h = hu[fn2]
            p = " ".join(f"{v:.0f}" for v in np.percentile(h, [10, 50, 90])) if h.size else "-"
            print(
                f"    {name:<12}{int(fn2.sum()):>6}{int(fn1.sum()):>5}{int(fnb.sum()):>5}"
                f"{int(fp2.sum()):>7}{int(fp1.sum()):>5}{int(fpn.sum()):>5}"
                f"{(fn2.sum() + fp2.sum()) / denom:>7.3f}  {p}, {_shares(ours, fn2)}"
            )
        print("    " + _neighbours_share(ours, mine, t2, v2, denom))
        if level == "L5":
            by_slice(mine, t2, reg)


def _neighbours_share(
    ours: np.ndarray, mine: np.ndarray, ts: np.ndarray, v2: np.ndarray, denom: int
) -> str:
    """The level's loss vs v2 at each neighbour (FN we gave it + FP TS gave it) and the rest."""
    fn, fp = ts & ~mine, mine & ~ts
    parts = []
    for other in LEVELS:
        n_fn = int((fn & (ours == LEVEL_TO_LABEL[other])).sum())
        n_fp = int((fp & (v2 == V2_IDS[other])).sum())
        if n_fn + n_fp:
            parts.append(f"{other} {n_fn}+{n_fp} ({(n_fn + n_fp) / denom:.3f})")
    rest_fn = int((fn & ~np.isin(ours, [LEVEL_TO_LABEL[lv] for lv in LEVELS])).sum())
    rest_fp = int((fp & ~np.isin(v2, list(V2_IDS.values()))).sum())
    known = ", ".join(parts) if parts else "none"
    return (
        f"wrong vertebra (FN given to / FP TS gives to): {known}; border (FN unlabelled +"
        f" FP outside TS's vertebrae): {rest_fn}+{rest_fp} ({(rest_fn + rest_fp) / denom:.3f})"
    )


def by_slice(mine: np.ndarray, ts: np.ndarray, reg: np.ndarray) -> None:
    """FN and FP against ``ts`` slice by slice (native axis 0), FN split by region."""
    print(f"    by slice: ours / TS v2 / FN / FP; FN by region ({', '.join(REGIONS)})")
    for k in np.nonzero((mine | ts).any(axis=(1, 2)))[0]:
        fn, fp = ts[k] & ~mine[k], mine[k] & ~ts[k]
        split = "/".join(str(int((fn & (reg[k] == r)).sum())) for r in range(len(REGIONS)))
        print(
            f"      slice {k}: {int(mine[k].sum())} / {int(ts[k].sum())} / {int(fn.sum())} /"
            f" {int(fp.sum())}; {split}"
        )


def tp_rule(ours: np.ndarray, scan: Scan) -> None:
    """What any (distance, HU floor) rule could take in L5's transverse-process zone."""
    v1, v2, body_disc, hu = scan.v1, scan.v2, scan.body_disc, scan.hu
    mine, t2, t1 = ours == LEVEL_TO_LABEL["L5"], v2 == V2_IDS["L5"], v1 == V1_IDS["L5"]
    reg = region_map(body_disc == 1, body_disc == 2, (body_disc == 1) & t2, scan.affine)
    tps = t2 & (reg == REGIONS.index("transverse"))
    if not tps.any():
        return
    ks, rs = np.nonzero(tps.any(axis=2)), np.nonzero(tps.any(axis=(0, 2)))[0]
    zone = np.zeros_like(tps)
    zone[ks[0].min() : ks[0].max() + 1, rs.min() : rs.max() + 1] = True
    zone &= reg == REGIONS.index("transverse")
    free = zone & (ours == 0)
    dist = ndimage.distance_transform_edt(~mine)  # voxels
    print(
        f"\nL5's transverse-process zone (slices {ks[0].min()}-{ks[0].max()}, rows"
        f" {rs.min()}-{rs.max()}, > {TP_MM:.0f} mm lateral): TS v2 {int((t2 & zone).sum())},"
        f" v1 {int((t1 & zone).sum())}, both {int((t1 & t2 & zone).sum())}, ours"
        f" {int((mine & zone).sum())}; unlabelled voxels there, TS v2 L5 / not, by voxels from"
        " our L5 and HU:"
    )
    floors = [-1000, 0, 50, 100, 150, 250]
    for d0, d1 in ((0, 1), (1, 2), (2, 3), (3, 5)):
        at = free & (dist > d0 + 0.01) & (dist <= d1 + 0.01)
        cells = []
        for lo, hi in pairwise([*floors, 10000]):
            m = at & (hu >= lo) & (hu < hi)
            cells.append(f"[{lo},{hi}) {int((m & t2).sum())}/{int((m & ~t2).sum())}")
        print(f"  ({d0},{d1}]: " + ", ".join(cells))
    best = max(
        (dice(mine | (free & (dist <= d + 0.01) & (hu >= f)), t2), d, f)
        for d in (1, 2, 3, 5)
        for f in floors
    )
    print(
        f"  best rule there: within {best[1]} voxels and >= {best[2]} HU -> L5 Dice v2"
        f" {best[0]:.3f} (now {dice(mine, t2):.3f})"
    )


def main() -> None:
    folder = DATA / "real-ct" / "totalseg-abdomen"
    if not (folder / "ct.nii.gz").is_file():
        print(f"Real CT: skipped (no data at {folder}; set SPINENODE_DATA)")
        return
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    hu, affine = read_nifti(folder / "ct.nii.gz")
    v1 = np.asarray(read_nifti(folder / "labels_totalseg_v1.nii.gz")[0])
    v2 = np.asarray(read_nifti(folder / "vertebrae_totalseg_v2.nii.gz")[0])
    body_disc = np.asarray(read_nifti(folder / "vertebral_body_and_discs.nii.gz")[0])
    body = body_disc == 1
    t0 = time.perf_counter()
    seg = segment_volume(np.asarray(hu, dtype=np.float32), affine)
    t_seg = time.perf_counter() - t0
    # the pipeline's labels (what analyze writes: other bone is background, so the border
    # rules see it as such), and for the shares below the bone that reached no vertebra
    ours = to_native(seg.verse_labels(), seg.work)
    verse = seg.verse_labels()
    verse[seg.instances == OTHER] = OTHER
    shares = ours.copy()
    shares[(ours == 0) & (to_native(verse, seg.work) == OTHER)] = OTHER
    print(f"segment stage {t_seg:.2f} s; levels {list(seg.levels)}")
    for w in seg.warnings:
        print(f"  warning: {w}")

    print(
        f"\n{'level':<6}{'Dice v1':>9}{'Dice v2':>9}{'v1 vs v2':>10}{'ours vox':>10}{'v2 vox':>8}"
    )
    for level in LEVELS:
        mine = ours == LEVEL_TO_LABEL[level]
        a, b = v1 == V1_IDS[level], v2 == V2_IDS[level]
        print(
            f"{level:<6}{dice(mine, a):>9.3f}{dice(mine, b):>9.3f}{dice(a, b):>10.3f}"
            f"{int(mine.sum()):>10}{int(b.sum()):>8}"
        )
    s1 = v2 == V2_IDS["S1"]
    slab = np.zeros_like(s1)
    z = np.nonzero(s1.any(axis=(1, 2)))[0]
    slab[z.min() : z.max() + 1] = True
    mine_s1 = (ours == LEVEL_TO_LABEL["S1"]) & slab
    v1_s1 = (v1 == V1_IDS["S1"]) & slab
    print(
        f"S1 in v2's S1 slab (slices {z.min()}–{z.max()}): Dice vs v2 {dice(mine_s1, s1):.3f}, "
        f"vs v1 sacrum in the slab {dice(mine_s1, v1_s1):.3f}, v1 vs v2 {dice(v1_s1, s1):.3f}"
    )

    print("\nwhich of our labels TS v2's voxels got (all / body / posterior elements):")
    for level in LEVELS:
        ts = v2 == V2_IDS[level]
        print(f"  {level:<4} all:  {_shares(shares, ts)}")
        print(f"       body: {_shares(shares, ts & body)}")
        print(f"       post: {_shares(shares, ts & ~body)}")

    ts_any = np.isin(v2, list(V2_IDS.values()))
    our_any = np.isin(ours, [LEVEL_TO_LABEL[lv] for lv in LEVELS])
    print("\nTS v2 vertebra voxels outside all our vertebrae, by distance to ours:")
    print("  " + _by_distance(ts_any & ~our_any, our_any))
    print("our vertebra voxels outside all TS v2 vertebrae, by distance to TS's:")
    print("  " + _by_distance(our_any & ~ts_any, ts_any))

    plain = np.isin(
        to_native(seg.verse_labels(), seg.work, refine=False), [LEVEL_TO_LABEL[lv] for lv in LEVELS]
    )
    added, removed = our_any & ~plain, plain & ~our_any
    print(
        "the native-grid border (refine_border + fill_small_holes) against the nearest-neighbour"
        f" map: added {int(added.sum())} voxels ({int((added & ts_any).sum())} TS v2 bone),"
        f" removed {int(removed.sum())} ({int((removed & ts_any).sum())} TS v2 bone)"
    )
    junctions(ours, v2, body_disc == 2, np.asarray(hu, dtype=np.float32))
    scan = Scan(
        np.asarray(hu, dtype=np.float32), np.asarray(affine, dtype=np.float64), v1, v2, body_disc
    )
    regions(ours, scan)
    tp_rule(ours, scan)


if __name__ == "__main__":
    main()

"""Where the segmenter's per-level Dice goes: border, missing/extra parts, wrong vertebra.

Run: ``.venv/bin/python bench/segment_errors.py [--seeds 1,2,3] [--structures]``

For each phantom (same seeds → same specs as ``bench_lumbar.py``) the pipeline's segmentation
(``inference.pipeline.segment_volume``) is mapped to the native grid as the pipeline does, and
every level's Dice loss is split into additive terms (1 − Dice = Σ terms; each term = its voxel
count / (|ours| + |truth|)):

- ``fn_border`` / ``fn_deep``: true bone of the level that we left unlabelled and outside our
  bone mask, ≤ 1 mm / > 1 mm from the true bone surface (distance = EDT, native mm);
- ``fn_bone``: true bone of the level inside our bone mask but labelled no vertebra (bone that
  reached no body core, or "other");
- ``fn_wrong``: true bone of the level that we gave to another vertebra;
- ``fp_border`` / ``fp_deep``: our voxels of the level outside all true bone, ≤ 1 mm / > 1 mm
  from it;
- ``fp_wrong``: our voxels of the level that truly belong to another bone (a neighbour, ilium).

``grid`` is the Dice of the TRUE labels taken to the 1 mm working grid and back by nearest
neighbour without the native border refinement (the floor set by the working grid alone).
``--structures`` names the phantom part (body, pedicle, lamina, SAP/IAP, spinous, transverse,
…) under every voxel given to the wrong vertebra, and splits ``fn_wrong + fp_wrong`` into
``overlap`` (voxel centre inside BOTH vertebrae's exact shapes: the phantom paints the later
vertebra over the earlier one, so no image can say whose it is — the floor) and the rest.
``--facets`` counts, per facet joint (L1/L2 … L5/S1) and slice spacing, the upper vertebra's
bone within ``FACET_MM`` of the true joint centre on the inferior articular process's side of
the joint plane (the IAP: the phantom's joint normal points from the SAP to the IAP) that our
labels give to the lower vertebra, and the lower one's bone on the other side (the SAP) given
to the upper one: on the working grid mapped to the native one by nearest neighbour (what the
planner reads) and on the refined native labels.
Tables are printed for all phantoms and per slice spacing.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from bench_lumbar import LEVELS, spec_for  # noqa: E402
from scipy import ndimage  # noqa: E402

from inference.geometry import index_to_mm, voxel_spacing  # noqa: E402
from inference.phantom import Phantom, generate  # noqa: E402
from inference.pipeline import segment_volume  # noqa: E402
from inference.segment.bone import bone_mask  # noqa: E402
from inference.segment.grid import to_native  # noqa: E402
from inference.verse import LEVEL_TO_LABEL  # noqa: E402

FACET_MM = 12.0
TERMS = ["fn_border", "fn_deep", "fn_bone", "fn_wrong", "fp_border", "fp_deep", "fp_wrong"]
UNASSIGNED = 254  # our bone that reached no named vertebra


def our_labels(ph: Phantom, facets: dict | None = None) -> tuple[np.ndarray, np.ndarray, float]:
    """Native-grid VerSe labels (``UNASSIGNED`` for our other bone) and our bone mask; with
    ``facets``, :func:`facet_counts` added to it."""
    t0 = time.perf_counter()
    seg = segment_volume(ph.hu, ph.affine)
    elapsed = time.perf_counter() - t0
    verse = seg.verse_labels()
    verse[(verse == 0) & (seg.instances > 0)] = UNASSIGNED
    bone = bone_mask(seg.work.hu)
    verse[(verse == 0) & bone] = UNASSIGNED
    labels = to_native(verse, seg.work)
    if facets is not None:
        facet_counts(ph, labels, to_native(seg.verse_labels(), seg.work, refine=False), facets)
    bone_native = to_native(bone.astype(np.uint8), seg.work) > 0
    return labels, bone_native, elapsed


def grid_floor(ph: Phantom) -> np.ndarray:
    """The TRUE labels resampled to the working grid (as bench_lumbar --true-masks) and back."""
    from lumbar_metrics import true_segmentation

    seg = true_segmentation(ph.hu, ph.affine, ph.labels)
    return to_native(seg.verse_labels(), seg.work, refine=False)


def decompose(
    ours: np.ndarray, bone: np.ndarray, truth: np.ndarray, spacing: np.ndarray, label: int
) -> dict[str, float]:
    """Additive Dice-loss terms of one level (see the module docstring)."""
    t, o = truth == label, ours == label
    denom = float(t.sum() + o.sum())
    if denom == 0:
        return {}
    true_bone = truth > 0
    fn = t & ~o
    fp = o & ~t
    # distances only where needed: crop to the level's box
    box = tuple(slice(max(0, int(a.min()) - 4), int(a.max()) + 5) for a in np.nonzero(t | o))
    inside = ndimage.distance_transform_edt(true_bone[box], sampling=spacing)
    outside = ndimage.distance_transform_edt(~true_bone[box], sampling=spacing)
    fn_b, fp_b = fn[box], fp[box]
    missed = fn_b & (ours[box] == 0) & ~bone[box]
    extra = fp_b & ~true_bone[box]
    return {
        "dice": 2.0 * float((t & o).sum()) / denom,
        "fn_border": float((missed & (inside <= 1.0)).sum()) / denom,
        "fn_deep": float((missed & (inside > 1.0)).sum()) / denom,
        "fn_bone": float((fn_b & ~missed & np.isin(ours[box], (0, UNASSIGNED))).sum()) / denom,
        "fn_wrong": float((fn_b & ~np.isin(ours[box], (0, UNASSIGNED))).sum()) / denom,
        "fp_border": float((extra & (outside <= 1.0)).sum()) / denom,
        "fp_deep": float((extra & (outside > 1.0)).sum()) / denom,
        "fp_wrong": float((fp_b & true_bone[box]).sum()) / denom,
    }


def structures(ph: Phantom, ours: np.ndarray, counts: Counter[str]) -> dict[int, int]:
    """Count wrongly assigned true-vertebra voxels by the phantom part nearest to them; return,
    per VerSe label, the wrong voxels (ours or truth that label) whose centre lies inside both
    the true and our vertebra's exact shape (the paint-order floor)."""
    wrong = (ph.labels > 0) & (ours != ph.labels) & ~np.isin(ours, (0, UNASSIGNED))
    shapes = {v.label: v for v in ph.anatomy.vertebrae}
    overlap: Counter[int] = Counter()
    for v in ph.anatomy.vertebrae:
        idx = np.argwhere(wrong & (ph.labels == v.label))
        if idx.size == 0:
            continue
        pts = index_to_mm(ph.affine, idx)
        theirs = ours[tuple(idx.T)]
        for u in np.unique(theirs):
            if int(u) in shapes:
                sel = theirs == u
                sdf_u = np.min([p.shape.sdf(pts[sel]) for p in shapes[int(u)].parts], axis=0)
                both = int((sdf_u < 0).sum())
                overlap[v.label] += both
                overlap[int(u)] += both
        if v.level not in LEVELS:
            continue
        names = [p.name.removesuffix("_left").removesuffix("_right") for p in v.parts]
        d = np.stack([p.shape.sdf(pts) for p in v.parts], axis=1)
        nearest = np.argmin(d, axis=1)
        for k, n in zip(*np.unique(nearest, return_counts=True), strict=True):
            counts[f"{v.level} {names[k]}"] += int(n)
    return dict(overlap)


def facet_counts(ph: Phantom, ours: np.ndarray, grid: np.ndarray, tally: dict) -> None:
    """Add, per (joint, slice spacing), [IAP voxels, given to the lower vertebra on ``grid``,
    on ``ours``, SAP voxels, given to the upper on ``grid``, on ``ours``] (native grids)."""
    aff, labels = ph.affine, ph.labels
    sp = voxel_spacing(aff)
    for v in ph.truth.to_json()["vertebrae"]:
        for fac in v["facets_at_risk"]:
            up, lo = LEVEL_TO_LABEL.get(fac["upper"]), LEVEL_TO_LABEL.get(fac["lower"])
            if up is None or lo is None:
                continue
            c, n = np.array(fac["centre"]), np.array(fac["normal"])
            ci = np.round(np.linalg.solve(aff, np.r_[c, 1.0])[:3]).astype(int)
            r = np.ceil(FACET_MM / sp).astype(int)
            box = tuple(slice(max(0, ci[i] - r[i]), ci[i] + r[i] + 1) for i in range(3))
            idx = np.argwhere(np.ones(labels[box].shape, dtype=bool)) + [b.start for b in box]
            rel = index_to_mm(aff, idx) - c
            near = np.linalg.norm(rel, axis=1) <= FACET_MM
            t, g, o = labels[box].ravel(), grid[box].ravel(), ours[box].ravel()
            iap = near & (t == up) & (rel @ n > 0)
            sap = near & (t == lo) & (rel @ n < 0)
            row = tally.setdefault((f"{fac['upper']}/{fac['lower']}", float(sp[0])), [0] * 6)
            for i, x in enumerate(
                (iap, iap & (g == lo), iap & (o == lo), sap, sap & (g == up), sap & (o == up))
            ):
                row[i] += int(x.sum())


def _print_facets(tally: dict) -> None:
    print(
        f"\nfacet joints: the upper vertebra's IAP bone (within {FACET_MM:g} mm of the joint) "
        "given to the lower one, the lower one's SAP bone given to the upper one"
    )
    print(
        f"{'joint':<8}{'sp':>6}{'IAP':>8}{'grid':>7}{'native':>7}{'SAP':>8}{'grid':>7}{'native':>7}"
    )
    order = list(LEVEL_TO_LABEL)
    joints = sorted({k[0] for k in tally}, key=lambda j: order.index(j.split("/")[0]))
    for joint in [*joints, "all"]:
        for sp in [*sorted({k[1] for k in tally}), 0.0]:
            rows = [
                x for k, x in tally.items() if joint in ("all", k[0]) and (sp == 0.0 or k[1] == sp)
            ]
            if not rows:
                continue
            a = np.sum(rows, axis=0)
            print(
                f"{joint:<8}{'all' if sp == 0.0 else f'{sp:g}':>6}{a[0]:>8}"
                f"{a[1] / max(a[0], 1):>7.3f}{a[2] / max(a[0], 1):>7.3f}{a[3]:>8}"
                f"{a[4] / max(a[3], 1):>7.3f}{a[5] / max(a[3], 1):>7.3f}"
            )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5,7,8,10", help="comma-separated seeds")
    parser.add_argument("--structures", action="store_true", help="name the misassigned parts")
    parser.add_argument("--no-grid", action="store_true", help="skip the working-grid floor")
    parser.add_argument("--facets", action="store_true", help="facet joints' IAP/SAP bone")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    rows: dict[str, list[dict[str, float]]] = {lv: [] for lv in LEVELS}
    floor: dict[str, list[float]] = {lv: [] for lv in LEVELS}
    by_sp: dict[float, dict[str, list[dict[str, float]]]] = {}
    parts: Counter[str] = Counter()
    facets: dict = {}
    times = []
    for seed in (int(s) for s in args.seeds.split(",")):
        spec = spec_for(seed)
        ph = generate(spec)
        ours, bone, elapsed = our_labels(ph, facets if args.facets else None)
        times.append(elapsed)
        spacing = voxel_spacing(ph.affine)
        back = None if args.no_grid else grid_floor(ph)
        overlap = structures(ph, ours, parts) if args.structures else {}
        sp_rows = by_sp.setdefault(float(spec.spacing_mm[0]), {lv: [] for lv in LEVELS})
        line = []
        for level in LEVELS:
            if level not in spec.level_names:
                continue
            lab = LEVEL_TO_LABEL[level]
            terms = decompose(ours, bone, ph.labels, spacing, lab)
            if not terms:
                continue
            if args.structures:
                denom = float((ph.labels == lab).sum() + (ours == lab).sum())
                terms["overlap"] = overlap.get(lab, 0) / denom
            rows[level].append(terms)
            sp_rows[level].append(terms)
            line.append(f"{level} {terms['dice']:.3f}")
            if back is not None:
                t, g = ph.labels == lab, back == lab
                floor[level].append(2.0 * float((t & g).sum()) / float(t.sum() + g.sum()))
        print(
            f"seed {seed:>2} sp {spec.spacing_mm[0]:.3g} mm segment {elapsed:.1f} s: "
            + ", ".join(line)
        )
    _print_table(rows, floor, "all phantoms")
    for sp, r in sorted(by_sp.items()):
        _print_table(r, {}, f"slice spacing {sp:g} mm")
    print(f"segment stage: mean {np.mean(times):.2f} s, max {np.max(times):.2f} s")
    if facets:
        _print_facets(facets)
    if args.structures:
        _print_structures(parts)


def _print_structures(parts: Counter[str]) -> None:
    """Wrong-vertebra voxels by true part, and per level and part."""
    total = max(sum(parts.values()), 1)
    print("\nwrong-vertebra voxels by true part (share of all such voxels):")
    by_part: Counter[str] = Counter()
    for key, n in parts.items():
        by_part[key.split(" ", 1)[1]] += n
    for name, n in by_part.most_common():
        print(f"  {name:<14}{n:>8} {n / total:6.1%}")
    print("  per level and part (top 15):")
    for key, n in parts.most_common(15):
        print(f"    {key:<18}{n:>8} {n / total:6.1%}")


def _print_table(
    rows: dict[str, list[dict[str, float]]], floor: dict[str, list[float]], title: str
) -> None:
    """Mean Dice and mean loss terms per level (terms in Dice points, sum = 1 − Dice; the
    ``overlap`` column, with ``--structures``, is the part of the two ``wrong`` terms)."""
    extra = ["overlap"] if any("overlap" in x for r in rows.values() for x in r) else []
    head = f"{'level':<6}{'n':>3}{'Dice':>7}{'grid':>7}" + "".join(
        f"{t:>10}" for t in TERMS + extra
    )
    print(f"\nDice loss per level, {title} (mean over phantoms; terms sum to 1 - Dice)")
    print(head)
    everything: list[dict[str, float]] = []
    all_floor: list[float] = []
    for level in [*LEVELS, "all"]:
        r = everything if level == "all" else rows[level]
        f = all_floor if level == "all" else floor.get(level, [])
        if level != "all":
            everything += r
            all_floor += f
        if not r:
            continue
        mean = {k: float(np.mean([x[k] for x in r])) for k in ["dice", *TERMS, *extra]}
        g = f"{np.mean(f):>7.3f}" if f else f"{'-':>7}"
        print(
            f"{level:<6}{len(r):>3}{mean['dice']:>7.3f}{g}"
            + "".join(f"{mean[t]:>10.4f}" for t in TERMS + extra)
        )


if __name__ == "__main__":
    main()

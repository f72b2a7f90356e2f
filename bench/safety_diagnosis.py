"""Why our screws grade GR B+ or Babu ≥ 1 on the TRUE masks: one line per such screw.

Run: ``.venv/bin/python bench/safety_diagnosis.py --seeds 1,2,3 [--true-masks] [--cache DIR]
[--all]``

For every screw of ours that the TRUE mask grades GR ≠ A (or Babu ≥ 1), print where along the
screw the worst breach is (mm from the entry), its direction, and what the other distance fields
say at that point: φ of the phantom's exact surface (analytic; the true mask is a voxelisation of
it) and φ of OUR mask (planner error when our mask saw it too, segmentation error when not). For
Babu: which zone of the true joint the screw meets (upper articular bone / joint space / lower
facet), from where to where along the screw, the entry relative to the true joint centre in the
vertebra frame (lateral, anterior, cranial mm), and whether OUR joint zones saw it.
Patient frame: DICOM LPS mm. ``--cache`` keeps each seed's segmentation (pickled) so that
planner changes can be re-diagnosed without segmenting again.
"""

from __future__ import annotations

import argparse
import gzip
import pickle
import sys
import time
from collections import Counter
from dataclasses import replace
from pathlib import Path
from types import SimpleNamespace
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from bench_lumbar import spec_for  # noqa: E402
from lumbar_metrics import Tally, compare_screws, summary_rows, true_segmentation  # noqa: E402

from inference.geometry import SignedDistance, bounding_box, crop_affine  # noqa: E402
from inference.grading import (  # noqa: E402
    BREACH_TOLERANCE_MM,
    ENTRY_SKIP_MM,
    FacetJoint,
    Screw,
    _not_yet_entered,
    babu_grade,
    facet_joint,
    gertzbein_robbins,
)
from inference.lumbar.draft import Draft  # noqa: E402
from inference.lumbar.engine import (  # noqa: E402
    NativeLabels,
    PreparedLevel,
    plan_prepared,
    prepare_levels,
)
from inference.lumbar.frames import vertebra_anatomy  # noqa: E402
from inference.lumbar.planner import plan_vertebra  # noqa: E402
from inference.phantom import generate  # noqa: E402
from inference.phantom.anatomy import build_anatomy  # noqa: E402
from inference.pipeline import Segmentation, segment_volume  # noqa: E402
from inference.results import ScrewPlan, Side  # noqa: E402
from inference.segment.grid import to_native  # noqa: E402
from inference.settings import PlanningSettings  # noqa: E402
from inference.verse import LEVEL_TO_LABEL  # noqa: E402

LEVELS = ["L1", "L2", "L3", "L4", "L5", "S1"]


def load(seed: int, true_masks: bool, cache: Path | None) -> tuple[Segmentation, dict[str, Any]]:
    """The segmentation (ours or the true one) and what the diagnosis needs of the phantom."""
    name = f"seed{seed}_{'true' if true_masks else 'seg'}.pkl.gz"
    if cache is not None and (cache / name).is_file():
        with gzip.open(cache / name, "rb") as f:
            seg, ph = pickle.load(f)
        return _unpacked(seg), ph
    p = generate(spec_for(seed))
    seg = (
        true_segmentation(p.hu, p.affine, p.labels)
        if true_masks
        else segment_volume(p.hu, p.affine)
    )
    ph = {"labels": p.labels, "affine": p.affine, "truth": p.truth.to_json(), "parts": p.parts}
    if cache is not None:
        cache.mkdir(parents=True, exist_ok=True)
        with gzip.open(cache / name, "wb", compresslevel=1) as f:
            pickle.dump((_packed(seg), ph), f)
    return seg, ph


def _packed(seg: Segmentation) -> Segmentation:
    """``seg`` small enough to cache: the working grid's HU dropped (the planner reads none) and
    the native crop's HU rounded to int16 (0.5 HU at most: phantom noise is tens of HU)."""
    nat = seg.work.native_hu
    work = replace(
        seg.work,
        hu=np.zeros((0, 0, 0), np.float32),
        native_hu=None if nat is None else np.round(nat).astype(np.int16),
    )
    return replace(seg, work=work)


def _unpacked(seg: Segmentation) -> Segmentation:
    nat = seg.work.native_hu
    if nat is None or nat.dtype == np.float32:
        return seg
    return replace(seg, work=replace(seg.work, native_hu=nat.astype(np.float32)))


def counted(phi: SignedDistance, screw: Screw) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(points, φ, t) of the thread points the grader counts (past the entry exemption)."""
    pts = screw.surface_points(start_mm=0.0)
    vals = phi(pts)
    ring = vals.size // np.arange(0.0, screw.length + 1e-9, 0.25).size
    t = np.repeat(np.arange(0.0, screw.length + 1e-9, 0.25), ring)
    keep = ~_not_yet_entered(phi, screw, vals) & (t >= ENTRY_SKIP_MM)
    return pts[keep], vals[keep], t[keep]


def worst_breach(phi: SignedDistance, screw: Screw) -> tuple[float, np.ndarray, float] | None:
    """(mm from the entry, point, φ) of the worst counted thread point beyond the tolerance."""
    pts, vals, t = counted(phi, screw)
    idx = np.nonzero(vals > BREACH_TOLERANCE_MM)[0]
    if idx.size == 0:
        return None
    k = idx[int(np.argmax(vals[idx]))]
    return float(t[k]), pts[k], float(vals[k])


def _true_level(ph: dict[str, Any], level: str) -> tuple[Any, ...]:
    key = ("_level", level)
    if key not in ph:
        ph[key] = _true_level_uncached(ph, level)
    out: tuple[Any, ...] = ph[key]
    return out


def _true_level_uncached(ph: dict[str, Any], level: str) -> tuple[Any, ...]:
    truth, labels, affine = ph["truth"], ph["labels"], ph["affine"]
    verts = {v["level"]: v for v in truth["vertebrae"]}
    order = [v["level"] for v in sorted(truth["vertebrae"], key=lambda v: -v["body_centroid"][2])]
    v = verts[level]
    mask_full = labels == LEVEL_TO_LABEL[level]
    box = bounding_box(mask_full, 12)
    mask, sub = mask_full[box], crop_affine(affine, box)
    from lumbar_metrics import truth_frame

    frame = truth_frame(v)
    k = order.index(level)
    upper = labels[box] == LEVEL_TO_LABEL.get(order[k - 1], -1) if k > 0 else None
    back = vertebra_anatomy(mask, sub, frame.s, frame.a).body_back_mm
    phi = SignedDistance(mask, sub)
    up_phi = SignedDistance(upper, sub) if upper is not None and upper.any() else None
    return v, mask, sub, frame, upper, back, phi, up_phi


def _zone_hits(joint: FacetJoint, screw: Screw) -> str:
    pts = screw.volume_points()
    t = (pts - screw.entry) @ screw.direction
    parts = []
    for name, zone in (("upper", joint.upper), ("J", joint.joint), ("facet", joint.facet)):
        hit = zone(pts, order=0) > 0.5
        if hit.any():
            parts.append(f"{name} t {t[hit].min():.1f}-{t[hit].max():.1f}")
    return ", ".join(parts) or "none"


def diagnose_seed(seed: int, args: argparse.Namespace, tally: Tally) -> None:
    seg, ph = load(seed, args.true_masks, args.cache)
    settings = PlanningSettings()
    native = (
        NativeLabels(to_native(seg.verse_labels(), seg.work), seg.work.native_affine)
        if args.native and not args.true_masks
        else None
    )
    t0 = time.perf_counter()
    ready, warnings = prepare_levels(seg, settings, native)
    out = (
        reference_plans(ph["truth"]) if args.reference else plan_prepared(ready, settings, warnings)
    )
    plan_s = time.perf_counter() - t0
    compare_screws(_as_result(out), ph["truth"], ph["labels"], ph["affine"], tally)
    prepared = {p.model.level: p for p in ready}
    print(f"seed {seed}: {len(out.screws)} screws, plan {plan_s:.1f} s")
    anatomy = build_anatomy(spec_for(seed)) if not args.no_analytic else None
    for plan in out.screws:
        line = diagnose_screw(plan, ph, prepared.get(plan.level), anatomy, args.all)
        if line:
            print("   " + line)
    planned = {(p.level, str(p.side)) for p in out.screws}
    for v in ph["truth"]["vertebrae"]:
        for ped in v["pedicles"] if v["level"] in LEVELS else ():
            if (v["level"], ped["side"]) not in planned:
                ref_d = ped["screw"]["diameter_mm"]
                print(f"   {v['level']} {ped['side']:<5} NO PLAN (reference d {ref_d})")
    for w in out.warnings:
        print(f"   warning: {w}")


def reference_plans(truth: dict[str, Any]) -> Any:
    """The phantom's own reference screws as plans (grades unknown: '-')."""
    plans = []
    for v in truth["vertebrae"]:
        if v["level"] not in LEVELS:
            continue
        for ped in v["pedicles"]:
            r = ped["screw"]
            plans.append(
                ScrewPlan(
                    v["level"],
                    Side(ped["side"]),
                    tuple(r["entry"]),
                    tuple(r["tip"]),
                    r["length_mm"],
                    r["diameter_mm"],
                    r["channel_mm"],
                    r["pta_deg"],
                    r["psa_deg"],
                    "-",
                    0.0,
                    None,
                    0,
                )
            )
    return SimpleNamespace(vertebrae=(), screws=tuple(plans), warnings=())


def _as_result(out: Any) -> Any:
    from inference.results import AnalysisResult

    return AnalysisResult("geometric", "diag", out.vertebrae, out.screws, (), out.warnings, {})


def diagnose_screw(
    plan: ScrewPlan, ph: dict[str, Any], ours: PreparedLevel | None, anatomy: Any, show_all: bool
) -> str:
    if plan.level not in LEVEL_TO_LABEL or not (ph["labels"] == LEVEL_TO_LABEL[plan.level]).any():
        return ""
    v, mask, sub, frame, upper, back, phi, up_phi = _true_level(ph, plan.level)
    side = Side(plan.side)
    screw = Screw(np.array(plan.entry_mm), np.array(plan.tip_mm), plan.diameter_mm)
    gr = gertzbein_robbins(phi, screw, frame, side)
    babu, joint = 0, None
    if upper is not None and upper.any():
        joint = facet_joint(mask, upper, sub, frame=frame, side=side, body_back_mm=back)
        babu = babu_grade(joint, screw)
    if gr.grade == "A" and babu == 0 and not show_all:
        return ""
    ref = next(p["screw"] for p in v["pedicles"] if p["side"] == plan.side)
    vol = screw.volume_points()
    up_true = float(up_phi(vol).min()) if up_phi is not None else 99.0
    up_ours = float(ours.upper(vol).min()) if ours is not None and ours.upper is not None else 99.0
    head = (
        f"{plan.level} {plan.side:<5} d {plan.diameter_mm} (ref {ref['diameter_mm']}) "
        f"L {plan.length_mm:.0f} (ref {ref['length_mm']:.0f}) ours GR {plan.gr_grade} "
        f"Babu {plan.babu_grade} | TRUE GR {gr.grade} {gr.breach_mm:.2f} {gr.direction or ''} "
        f"Babu {babu} | upper clearance true {up_true:.1f} ours {up_ours:.1f}"
    )
    parts = [head]
    wb = worst_breach(phi, screw)
    if gr.grade != "A" and wb is not None:
        t, p, val = wb
        ana, ana_max = float("nan"), float("nan")
        if anatomy is not None:
            vert = next(x for x in anatomy.vertebrae if x.level == plan.level)
            ana = float(vert.sdf(p[None, :])[0])
            ana_max = float(vert.sdf(counted(phi, screw)[0]).max())
        ours_phi = float(ours.model.safety_phi(p[None, :])[0]) if ours is not None else float("nan")
        ours_wb = worst_breach(ours.model.safety_phi, screw) if ours is not None else None
        parts.append(
            f"    worst at t {t:.1f}/{screw.length:.0f} mm: phi true-voxel {val:.2f} analytic "
            f"{ana:.2f} (thread max {ana_max:.2f}) ours {ours_phi:.2f}; ours worst "
            + (f"{ours_wb[2]:.2f} at t {ours_wb[0]:.1f}" if ours_wb else "none")
        )
    if babu > 0 and joint is not None:
        fac = next((f for f in v["facets_at_risk"] if f["side"] == plan.side), None)
        rel = ""
        if fac is not None:
            loc = (
                frame.to_local(np.array([plan.entry_mm]))[0]
                - frame.to_local(np.array([fac["centre"]]))[0]
            )
            lat = loc[0] * (-1.0 if side is Side.LEFT else 1.0)
            rel = f"entry - joint centre (lat, ant, cran) {lat:+.1f} {loc[1]:+.1f} {loc[2]:+.1f}"
            ref_loc = (
                frame.to_local(np.array([ref["entry"]]))[0]
                - frame.to_local(np.array([fac["centre"]]))[0]
            )
            rel += (
                f"; ref entry {ref_loc[0] * (-1.0 if side is Side.LEFT else 1.0):+.1f} "
                f"{ref_loc[1]:+.1f} {ref_loc[2]:+.1f}"
            )
        ours_j = ours.joints.get(side) if ours is not None else None
        seen = "no joint" if ours_j is None or ours_j.empty else _zone_hits(ours_j, screw)
        parts.append(f"    true zones: {_zone_hits(joint, screw)}; {rel}; our zones: {seen}")
    if ours is not None:
        parts.extend(_stages(ours, side, screw, (phi, frame, joint)))
    return "\n   ".join(parts)


def _stages(
    ours: PreparedLevel,
    side: Side,
    final: Screw,
    truth: tuple[SignedDistance, Any, FacetJoint | None],
) -> list[str]:
    """The screw after each planner step (plan_vertebra's trace): size, entry and angle from the
    final screw, our φ's worst thread point, TRUE grades."""
    phi, frame, joint = truth
    trace: dict[str, dict[Side, Draft]] = {}
    plan_vertebra(ours.model, PlanningSettings(), ours.joints, ours.upper, trace=trace)
    out = []
    for step, drafts in trace.items():
        if side not in drafts:
            continue
        sc = drafts[side].screw
        gr = gertzbein_robbins(phi, sc, frame, side)
        babu = babu_grade(joint, sc) if joint is not None else 0
        turn = np.degrees(np.arccos(np.clip(sc.direction @ final.direction, -1.0, 1.0)))
        mine = float(ours.model.safety_phi(sc.surface_points()).max())
        moved = float(np.linalg.norm(sc.entry - final.entry))
        out.append(
            f"    {step:<9} d {sc.diameter} L {sc.length:.0f} entry {moved:.1f} mm turn "
            f"{turn:.1f} deg | our phi max {mine:+.2f} | TRUE GR {gr.grade} {gr.breach_mm:.2f} "
            f"Babu {babu}"
        )
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", default="1,2,3,4,5,7,8,10")
    parser.add_argument("--true-masks", action="store_true")
    parser.add_argument("--cache", type=Path, default=None)
    parser.add_argument("--reference", action="store_true", help="grade the reference screws")
    parser.add_argument("--all", action="store_true", help="also print screws graded A / 0")
    parser.add_argument("--no-analytic", action="store_true", help="skip the analytic φ")
    parser.add_argument(
        "--no-native",
        dest="native",
        action="store_false",
        help="plan without the native-grid labels (the working grid's walls for the breach checks)",
    )
    args = parser.parse_args()
    tally = Tally()
    for seed in (int(s) for s in args.seeds.split(",")):
        diagnose_seed(seed, args, tally)
    print("\n".join(summary_rows(tally, LEVELS)))
    gr, babu = Counter(tally.gr), Counter(tally.babu)
    n = max(len(tally.gr), 1)
    print("GR vs TRUE masks: " + ", ".join(f"{g} {gr[g]} ({gr[g] / n:.1%})" for g in "ABCDE"))
    print("Babu vs TRUE: " + ", ".join(f"{b}: {babu[b]} ({babu[b] / n:.1%})" for b in range(4)))
    rows = [r for rs in tally.screw.values() for r in rs]
    print(
        f"screws {len(rows)} / reference {tally.reference_screws}; mean dLen "
        f"{np.mean([r['dlen'] for r in rows]):.2f} dDia {np.mean([r['ddia'] for r in rows]):.2f} "
        f"screw Dice {np.mean([r['dice'] for r in rows]):.3f}"
    )


if __name__ == "__main__":
    main()

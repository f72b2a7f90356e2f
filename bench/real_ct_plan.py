"""Per-screw diagnosis on the real CT: our labels vs TotalSegmentator's (v2) given to the planner.

Run: ``SPINENODE_DATA=/work/shared/data .venv/bin/python bench/real_ct_plan.py [--cache DIR]
[--steps]``

For ../shared/data/real-ct/totalseg-abdomen (3 mm voxels) the planner runs twice: on OUR
segmentation (with its native-grid walls, as the pipeline does) and on TS v2's labels mapped to
VerSe ids (resampled onto the same 1 mm working grid, TS's native labels as the walls). Per
level and side: planned (size, channel, angles, grade on the walls it was planned on) or the
reason it was not; with ``--steps`` the draft after each planner step (plan_vertebra's trace).
A screw missing on TS's labels too is a planner limit, missing on ours only a segmentation one.
Each run's planned screws are then graded against TS v2's masks (GR on the native 3 mm label,
Babu on the facet joint with the TS vertebra above, angles in the frames the planner builds on
TS's labels) as the truth the phantoms cannot give; last, our frames and body walls against
those on TS's labels.
Patient frame: DICOM LPS mm.
"""

from __future__ import annotations

import argparse
import dataclasses
import gzip
import os
import pickle
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from lumbar_metrics import true_segmentation  # noqa: E402

from inference.geometry import (  # noqa: E402
    Frame,
    SignedDistance,
    bounding_box,
    crop_affine,
    index_to_mm,
)
from inference.grading import Screw, babu_grade, facet_joint, gertzbein_robbins  # noqa: E402
from inference.lumbar.body import extract_body, with_native_labels  # noqa: E402
from inference.lumbar.draft import Draft  # noqa: E402
from inference.lumbar.engine import NativeLabels, PreparedLevel, prepare_levels  # noqa: E402
from inference.lumbar.frames import VertebraAnatomy, screw_angles  # noqa: E402
from inference.lumbar.planner import plan_vertebra  # noqa: E402
from inference.nifti import read_nifti  # noqa: E402
from inference.pipeline import Segmentation, segment_volume  # noqa: E402
from inference.results import ScrewPlan, Side  # noqa: E402
from inference.segment.grid import to_native  # noqa: E402
from inference.settings import PlanningSettings  # noqa: E402
from inference.verse import LEVEL_TO_LABEL  # noqa: E402

DATA = Path(os.environ.get("SPINENODE_DATA", REPO.parent / "shared" / "data"))
V2_IDS = {"L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "S1": 26}
LEVELS = ["L1", "L2", "L3", "L4", "L5", "S1"]


def ours(hu: np.ndarray, affine: np.ndarray, cache: Path | None) -> Segmentation:
    """Our segmentation of the real CT (pickled in ``cache`` when given)."""
    path = cache / "real_ours.pkl.gz" if cache is not None else None
    if path is not None and path.is_file():
        with gzip.open(path, "rb") as f:
            seg: Segmentation = pickle.load(f)
        return seg
    seg = segment_volume(hu, affine)
    if path is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
        with gzip.open(path, "wb", compresslevel=1) as f:
            pickle.dump(seg, f)
    return seg


def _draft_line(model: PreparedLevel, draft: Draft) -> str:
    """Size, channel, angles and grade of a draft on the walls it is planned on."""
    m = model.model
    pta, psa = screw_angles(m.anatomy.frame, draft.screw.entry, draft.screw.tip, draft.side)
    gr = gertzbein_robbins(m.safety_phi, draft.screw, m.anatomy.frame, draft.side)
    return (
        f"{draft.length:4.0f}x{draft.diameter:.1f} ch {draft.channel.length:5.1f} "
        f"r {draft.channel.radius_mm:.1f} PTA {pta:5.1f} PSA {psa:5.1f} "
        f"GR {gr.grade} {gr.breach_mm:.1f} {gr.direction or ''}"
    )


def run_planner(name: str, seg: Segmentation, native: NativeLabels, steps: bool) -> list[ScrewPlan]:
    """Plan every level, printing per side what was planned or why not."""
    settings = PlanningSettings()
    ready, warnings = prepare_levels(seg, settings, native)
    print(f"\n== {name}: levels {list(seg.levels)}")
    for w in warnings:
        print(f"   warning: {w}")
    plans: list[ScrewPlan] = []
    for item in ready:
        trace: dict[str, dict[Side, Draft]] = {}
        got, warn = plan_vertebra(item.model, settings, item.joints, item.upper, trace=trace)
        plans.extend(got)
        level = item.model.level
        for side in (Side.LEFT, Side.RIGHT):
            plan = next((p for p in got if p.side == side), None)
            if plan is not None:
                print(
                    f"   {level} {side:<5} planned {plan.length_mm:4.0f}x{plan.diameter_mm:.1f}"
                    f" ch {plan.channel_mm:5.1f} PTA {plan.pta_deg:5.1f} PSA {plan.psa_deg:5.1f}"
                    f" GR {plan.gr_grade} Babu {plan.babu_grade}"
                )
            else:
                why = [w for w in warn if w.startswith(f"{level} {side}")]
                print(f"   {level} {side:<5} NOT PLANNED: {'; '.join(why) or '?'}")
            if steps:
                for step, drafts in trace.items():
                    if side in drafts:
                        print(f"        {step:<9} {_draft_line(item, drafts[side])}")
    print(f"   {name}: {len(plans)} screws")
    return plans


def grade_vs_ts(
    plans: list[ScrewPlan], v2: np.ndarray, affine: np.ndarray, frames: dict[str, VertebraAnatomy]
) -> None:
    """GR and Babu of ``plans`` on TS v2's masks (native grid); ``frames``: the vertebra frames
    and body walls on TS's labels (the working grid, as the planner builds them), in which the
    angles are measured too."""
    gr_count: dict[str, int] = {}
    babu_count: dict[int, int] = {}
    for plan in plans:
        level = plan.level
        full = v2 == V2_IDS[level]
        box = bounding_box(full, 12)
        mask, sub = full[box], crop_affine(affine, box)
        anatomy = frames[level]
        k = LEVELS.index(level)
        above = V2_IDS[LEVELS[k - 1]] if k > 0 else 32  # T12 above L1
        upper = v2[box] == above
        side = Side(plan.side)
        screw = _screw(plan)
        gr = gertzbein_robbins(SignedDistance(mask, sub), screw, anatomy.frame, side)
        babu = 0
        if upper.any():
            joint = facet_joint(
                mask, upper, sub, frame=anatomy.frame, side=side, body_back_mm=anatomy.body_back_mm
            )
            babu = babu_grade(joint, screw)
        gr_count[gr.grade] = gr_count.get(gr.grade, 0) + 1
        babu_count[babu] = babu_count.get(babu, 0) + 1
        pta, psa = screw_angles(anatomy.frame, screw.entry, screw.tip, side)
        print(
            f"   {level} {side:<5} vs TS v2: GR {gr.grade} {gr.breach_mm:.2f} "
            f"{gr.direction or '':<9} Babu {babu}  PTA/PSA in TS's frame {pta:5.1f} {psa:5.1f}"
            f" (ours {plan.pta_deg:5.1f} {plan.psa_deg:5.1f})"
        )
    n = max(1, len(plans))
    print(
        "   GR vs TS v2: "
        + ", ".join(f"{g}: {c} ({c / n:.0%})" for g, c in sorted(gr_count.items()))
        + "; Babu: "
        + ", ".join(f"{b}: {c} ({c / n:.0%})" for b, c in sorted(babu_count.items()))
    )


def anatomies(seg: Segmentation, native: NativeLabels) -> dict[str, VertebraAnatomy]:
    """Frame and body walls per level, as the planner builds them (on the working labels with
    the background that the native labels give a vertebra added, as the pipeline does)."""
    ready = prepare_levels(seg, PlanningSettings(), native)[0]
    return {p.model.level: p.model.anatomy for p in ready}


def compare_frames(mine: dict[str, VertebraAnatomy], theirs: dict[str, VertebraAnatomy]) -> None:
    """Our vertebra frames and body walls against those on TS's labels (same code, LPS mm)."""
    print("\n== frames, ours vs on TS v2's labels (body walls: local a of its back / front, mm)")
    for level in LEVELS:
        if level not in mine or level not in theirs:
            continue
        a, b = mine[level], theirs[level]
        tilt = np.degrees(np.arccos(np.clip(abs(a.frame.s @ b.frame.s), 0.0, 1.0)))
        pa = a.frame.a - (a.frame.a @ b.frame.s) * b.frame.s
        axial = np.degrees(np.arctan2(pa @ b.frame.r, pa @ b.frame.a))
        shift = float(np.linalg.norm(a.frame.origin - b.frame.origin))
        print(
            f"   {level}: s {tilt:4.1f} deg apart, axial rotation {axial:5.1f} deg, origins "
            f"{shift:4.1f} mm apart; body back / front ours {a.body_back_mm:6.1f} / "
            f"{a.body_front_mm:5.1f}, TS {b.body_back_mm:6.1f} / {b.body_front_mm:5.1f}"
        )


def frame_parts(
    mine: Segmentation, theirs: Segmentation, frames: dict[str, VertebraAnatomy]
) -> None:
    """Which part turns our frames about s: ``a`` = body centroid − centroid of the rest of the
    vertebra (frames.vertebra_anatomy), each part taken from our masks or from TS's (both as the
    planner sees them, native labels added), measured as the turn about TS's frame's s (deg);
    and how far our body's and rest's centroids lie from TS's along TS's r and a (mm)."""
    print(
        "\n== what turns our a (turn about TS's s, deg): ours, TS's body + our rest, our body +"
        " TS's rest"
    )
    for level in LEVELS[:-1]:
        if level not in mine.levels or level not in theirs.levels or level not in frames:
            continue
        k, kt = mine.levels.index(level) + 1, theirs.levels.index(level) + 1
        box = bounding_box((mine.instances == k) | (theirs.instances == kt), 12)
        aff = crop_affine(mine.work.affine, box)
        parts = []
        for m in (mine.instances[box] == k, theirs.instances[box] == kt):
            body = extract_body(m, np.ones(3))
            parts.append([index_to_mm(aff, np.argwhere(p)).mean(axis=0) for p in (body, m & ~body)])
        (body_o, rest_o), (body_t, rest_t) = parts
        f = frames[level].frame

        def turn(v: np.ndarray, f: Frame = f) -> float:
            return float(np.degrees(np.arctan2(v @ f.r, v @ f.a)))

        print(
            f"   {level}: {turn(body_o - rest_o):5.1f} {turn(body_t - rest_o):5.1f} "
            f"{turn(body_o - rest_t):5.1f}; body off by r {(body_o - body_t) @ f.r:4.1f} a "
            f"{(body_o - body_t) @ f.a:4.1f}, rest off by r {(rest_o - rest_t) @ f.r:4.1f} a "
            f"{(rest_o - rest_t) @ f.a:4.1f}"
        )


def _filled(seg: Segmentation, native: NativeLabels) -> Segmentation:
    """``seg`` with what its native labels add, as the planner sees it (engine.prepare_levels)."""
    filled = with_native_labels(
        seg.instances, seg.work.affine, seg.levels, native.labels, native.affine
    )
    return dataclasses.replace(seg, instances=filled)


def _screw(plan: ScrewPlan) -> Screw:
    return Screw(np.array(plan.entry_mm), np.array(plan.tip_mm), plan.diameter_mm)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cache", type=Path, help="keep our segmentation here (gzip pickle)")
    parser.add_argument("--steps", action="store_true", help="the draft after each planner step")
    parser.add_argument("--no-ts", action="store_true", help="skip the TS-labels control")
    args = parser.parse_args()
    folder = DATA / "real-ct" / "totalseg-abdomen"
    if not (folder / "ct.nii.gz").is_file():
        print(f"real CT: skipped (no data at {folder})")
        return
    hu, affine = read_nifti(folder / "ct.nii.gz")
    v2, _ = read_nifti(folder / "vertebrae_totalseg_v2.nii.gz")
    hu = np.asarray(hu, dtype=np.float32)
    v2 = np.asarray(v2).astype(np.int16)
    v2_verse = np.zeros(v2.shape, dtype=np.uint8)
    for level, i in V2_IDS.items():
        v2_verse[v2 == i] = LEVEL_TO_LABEL[level]
    t0 = time.perf_counter()
    seg = ours(hu, affine, args.cache)
    native = NativeLabels(to_native(seg.verse_labels(), seg.work), seg.work.native_affine)
    print(f"our segmentation: {time.perf_counter() - t0:.1f} s")
    ts = true_segmentation(hu, affine, v2_verse)
    ts_native = NativeLabels(v2_verse, ts.work.native_affine)
    ts_frames = anatomies(ts, ts_native)
    mine = run_planner("ours", seg, native, args.steps)
    grade_vs_ts(mine, v2, affine, ts_frames)
    if not args.no_ts:
        theirs = run_planner("TS v2", ts, ts_native, args.steps)
        grade_vs_ts(theirs, v2, affine, ts_frames)
    compare_frames(anatomies(seg, native), ts_frames)
    frame_parts(_filled(seg, native), _filled(ts, ts_native), ts_frames)


if __name__ == "__main__":
    main()

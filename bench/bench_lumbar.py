"""Accuracy and speed of the weights-free lumbosacral engine (``inference.pipeline``).

Run: ``.venv/bin/python bench/bench_lumbar.py [--quick] [--n 20] [--seeds 1,5,9] [--no-real]
[--no-perf] [--true-masks] [--per-screw]``

1. Phantoms (``inference.phantom``, varied seeds, slice spacings 0.625–3 mm, lordosis, rotation,
   osteoporosis, osteophytes, ribs): Dice per level vs the exact labels, level identification,
   screws vs the phantom's reference screws (|ΔPTA|, |ΔPSA|, entry/tip distance, length/diameter
   difference, screw-overlap Dice), GR and Babu grades of OUR screws judged on the TRUE masks.
2. The real CT ../shared/data/real-ct/totalseg-abdomen (3 mm, NIfTI RAS → LPS by the reader):
   Dice per level vs both TotalSegmentator label versions, level identification.
3. A 512×512×300 phantom CT in a fresh process: wall time and peak memory (tracemalloc) per stage
   and the process's peak RSS.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
sys.path.insert(0, str(REPO / "bench"))

import numpy as np  # noqa: E402
from lumbar_metrics import (  # noqa: E402
    Tally,
    compare_screws,
    dice,
    identification,
    level_dice,
    signed_rows,
    summary_rows,
    true_segmentation,
)

from inference.errors import InferenceError  # noqa: E402
from inference.lumbar.engine import plan_lumbar  # noqa: E402
from inference.nifti import read_nifti  # noqa: E402
from inference.phantom import Phantom, PhantomSpec, generate  # noqa: E402
from inference.pipeline import AnalysisOutput, analyze_volume  # noqa: E402
from inference.results import AnalysisResult  # noqa: E402
from inference.segment.grid import to_native  # noqa: E402
from inference.settings import PlanningSettings  # noqa: E402

DATA = Path(os.environ.get("SPINENODE_DATA", REPO.parent / "shared" / "data"))
LEVELS = ["L1", "L2", "L3", "L4", "L5", "S1"]
SPACINGS = [
    (1.0, 0.8, 0.8),
    (3.0, 0.78, 0.78),
    (2.0, 0.7, 0.7),
    (0.625, 0.9, 0.9),
    (1.25, 0.75, 0.75),
]
V1_IDS = {"L1": 22, "L2": 21, "L3": 20, "L4": 19, "L5": 18, "S1": 92}
V2_IDS = {"L1": 31, "L2": 30, "L3": 29, "L4": 28, "L5": 27, "S1": 26}
PERF_CHILD = r"""
import resource, sys, time, tracemalloc, json
sys.path.insert(0, sys.argv[1])
import numpy as np
from inference.phantom import PhantomSpec, generate
spec = PhantomSpec.from_seed(4242, "lumbar", spacing_mm=(1.0, 0.7, 0.7), shape=(300, 512, 512))
ph = generate(spec)
hu, aff = ph.hu, ph.affine
del ph
from inference.pipeline import segment_volume
from inference.lumbar.engine import NativeLabels, plan_lumbar
from inference.segment.grid import to_native
from inference.settings import PlanningSettings
out = {}
tracemalloc.start()
t0 = time.perf_counter(); tracemalloc.reset_peak()
seg = segment_volume(hu, aff)
out["segment"] = (time.perf_counter() - t0, tracemalloc.get_traced_memory()[1] / 2**20)
t0 = time.perf_counter(); tracemalloc.reset_peak()
lab = to_native(seg.verse_labels(), seg.work)
out["labels"] = (time.perf_counter() - t0, tracemalloc.get_traced_memory()[1] / 2**20)
t0 = time.perf_counter(); tracemalloc.reset_peak()
res = plan_lumbar(seg, PlanningSettings(), NativeLabels(lab, seg.work.native_affine))
out["plan"] = (time.perf_counter() - t0, tracemalloc.get_traced_memory()[1] / 2**20)
out["levels"] = list(seg.levels); out["screws"] = len(res.screws)
out["maxrss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
out["input_mb"] = hu.nbytes / 2**20
print(json.dumps(out))
"""


def spec_for(seed: int) -> PhantomSpec:
    return PhantomSpec.from_seed(seed, "lumbar", spacing_mm=SPACINGS[seed % len(SPACINGS)])


def analyze_true(ph: Phantom) -> AnalysisOutput:
    """Plan on the phantom's TRUE labels (the planner's own error, no segmentation error)."""
    t0 = time.perf_counter()
    seg = true_segmentation(ph.hu, ph.affine, ph.labels)
    t1 = time.perf_counter()
    out = plan_lumbar(seg, PlanningSettings())
    t2 = time.perf_counter()
    result = AnalysisResult(
        engine="geometric (true masks)",
        version="bench",
        vertebrae=out.vertebrae,
        screws=out.screws,
        c2=(),
        warnings=out.warnings,
        timings_s={"truth_resample": t1 - t0, "plan": t2 - t1},
    )
    return AnalysisOutput(result, to_native(seg.verse_labels(), seg.work))


def run_phantoms(seeds: list[int], true_masks: bool = False, per_screw: bool = False) -> None:
    tally = Tally()
    clean = Tally()  # phantoms whose levels were all found and named right
    n_clean = 0
    times: dict[str, list[float]] = {}
    failures = 0
    for seed in seeds:
        spec = spec_for(seed)
        ph = generate(spec)
        t0 = time.perf_counter()
        try:
            out = analyze_true(ph) if true_masks else analyze_volume(ph.hu, ph.affine)
        except InferenceError as exc:
            failures += 1
            print(f"seed {seed}: FAILED {exc}")
            continue
        wall = time.perf_counter() - t0
        for k, v in out.result.timings_s.items():
            times.setdefault(k, []).append(v)
        times.setdefault("total", []).append(wall)
        present = [lv for lv in spec.level_names if lv in LEVELS]
        level_dice(out.labels, ph.labels, present, tally)
        ident = identification(out.result, out.labels, ph.labels)
        tally.ident += ident
        n_detail = len(tally.detail)
        compare_screws(out.result, ph.truth.to_json(), ph.labels, ph.affine, tally)
        found_all = {v.level for v in out.result.vertebrae} >= set(present)
        if found_all and all(ident):
            n_clean += 1
            level_dice(out.labels, ph.labels, present, clean)
            clean.ident += ident
            compare_screws(out.result, ph.truth.to_json(), ph.labels, ph.affine, clean)
        found = [v.level for v in out.result.vertebrae]
        print(
            f"seed {seed:>2} grid {ph.hu.shape} sp {spec.spacing_mm[0]:.3g} mm "
            f"lordosis x{spec.lordosis_scale:.2f} rot {spec.axial_rotation_deg:+.1f}° "
            f"osteop {spec.osteoporosis!s:<5} levels {','.join(found)} "
            f"ident {sum(ident)}/{len(ident)} screws {len(out.result.screws)} {wall:.1f} s"
        )
        if per_screw:
            print("\n".join("    " + line for line in tally.detail[n_detail:]))
            for w in out.result.warnings:
                print(f"    warning: {w}")
    print("\nPhantoms: per level (means; distances mm, angles deg)")
    print("\n".join(summary_rows(tally, LEVELS) + signed_rows(tally, LEVELS)))
    print(f"\nOnly the {n_clean} phantoms with every level found and named right:")
    print("\n".join(summary_rows(clean, LEVELS)))
    cgr, cbabu = Counter(clean.gr), Counter(clean.babu)
    nc = max(len(clean.gr), 1)
    print("  GR vs TRUE masks: " + ", ".join(f"{g} {cgr[g] / nc:.1%}" for g in "ABCDE"))
    print("  Babu vs TRUE masks: " + ", ".join(f"{b}: {cbabu[b] / nc:.1%}" for b in range(4)))
    total = len(tally.ident)
    print(
        f"level identification: {sum(tally.ident)}/{total} = {sum(tally.ident) / max(total, 1):.1%}"
    )
    print(
        f"analysis failures: {failures}/{len(seeds)}; reference screws without a plan: "
        f"{tally.missing_screws}/{tally.reference_screws}"
    )
    gr, babu = Counter(tally.gr), Counter(tally.babu)
    ngr = max(len(tally.gr), 1)
    print("GR vs TRUE masks: " + ", ".join(f"{g} {gr[g]} ({gr[g] / ngr:.1%})" for g in "ABCDE"))
    print(
        "Babu vs TRUE masks: "
        + ", ".join(f"{b}: {babu[b]} ({babu[b] / ngr:.1%})" for b in range(4))
    )
    print(
        "wall time per stage (mean / max s): "
        + ", ".join(f"{k} {np.mean(v):.2f} / {np.max(v):.2f}" for k, v in times.items())
    )


def run_real() -> None:
    folder = DATA / "real-ct" / "totalseg-abdomen"
    if not (folder / "ct.nii.gz").is_file():
        print(f"\nReal CT: skipped (no data at {folder})")
        return
    hu, affine = read_nifti(folder / "ct.nii.gz")
    v1, _ = read_nifti(folder / "labels_totalseg_v1.nii.gz")
    v2, _ = read_nifti(folder / "vertebrae_totalseg_v2.nii.gz")
    t0 = time.perf_counter()
    try:
        out = analyze_volume(np.asarray(hu, dtype=np.float32), affine)
    except InferenceError as exc:
        print(f"\nReal CT: analysis failed: {exc}")
        return
    print(
        f"\nReal CT totalseg-abdomen ({hu.shape}, 3 mm): {time.perf_counter() - t0:.1f} s, "
        f"levels {[v.level for v in out.result.vertebrae]}, {len(out.result.screws)} screws"
    )
    print(f"{'level':<7}{'Dice v1':>9}{'Dice v2':>9}{'v1 vs v2':>10}")
    from inference.verse import LEVEL_TO_LABEL

    for level in LEVELS:
        ours = out.labels == LEVEL_TO_LABEL[level]
        a, b = v1 == V1_IDS[level], v2 == V2_IDS[level]
        print(f"{level:<7}{dice(ours, a):>9.3f}{dice(ours, b):>9.3f}{dice(a, b):>10.3f}")
    v2_verse = np.zeros_like(v2, dtype=np.uint8)
    for level, i in V2_IDS.items():
        v2_verse[v2 == i] = LEVEL_TO_LABEL[level]
    ident = identification(out.result, out.labels, v2_verse)
    print(f"level identification vs v2: {sum(ident)}/{len(ident)}")
    for w in out.result.warnings:
        print(f"  warning: {w}")


def run_perf() -> None:
    proc = subprocess.run(
        [sys.executable, "-c", PERF_CHILD, str(REPO)], capture_output=True, text=True, check=False
    )
    if proc.returncode != 0:
        print(f"\n512x512x300: failed\n{proc.stderr[-2000:]}")
        return
    r = json.loads(proc.stdout.strip().splitlines()[-1])
    total = sum(r[k][0] for k in ("segment", "plan", "labels"))
    print(
        f"\n512x512x300 phantom CT (input {r['input_mb']:.0f} MB float32): total {total:.1f} s "
        f"wall; levels {r['levels']}, {r['screws']} screws; "
        f"process peak RSS {r['maxrss_mb']:.0f} MB (includes the phantom generator)"
    )
    for k in ("segment", "plan", "labels"):
        print(f"  {k:<8} {r[k][0]:6.2f} s   peak traced {r[k][1]:7.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="4 phantoms instead of --n")
    parser.add_argument("--n", type=int, default=20, help="number of phantoms (default 20)")
    parser.add_argument("--seeds", help="comma-separated phantom seeds (overrides --n/--quick)")
    parser.add_argument("--no-real", action="store_true", help="skip the real CT")
    parser.add_argument("--no-perf", action="store_true", help="skip the 512x512x300 timing")
    parser.add_argument(
        "--true-masks",
        action="store_true",
        help="plan on the phantoms' TRUE labels (planner error alone; skips the real CT)",
    )
    parser.add_argument("--per-screw", action="store_true", help="print every screw vs reference")
    args = parser.parse_args()
    print(f"cores: {os.cpu_count()}, load average: {os.getloadavg()[0]:.1f}")
    n = 4 if args.quick else args.n
    seeds = [int(s) for s in args.seeds.split(",")] if args.seeds else list(range(1, n + 1))
    run_phantoms(seeds, args.true_masks, args.per_screw)
    if not args.no_real and not args.true_masks:
        run_real()
    if not args.no_perf:
        run_perf()


if __name__ == "__main__":
    main()

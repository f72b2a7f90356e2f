"""Generation time of a 512×512×300 lumbar phantom (target: < 60 s on 2 cores).

Run: ``.venv/bin/python bench/bench_phantom.py [--seed N] [--repeat K]``. Prints the grid, the time
of each stage (anatomy + truth, painting, blur + noise) and the total, and as a peer in the same run
the time of one plain full-volume ``scipy.ndimage.gaussian_filter`` on the same grid, so the ratio
says how many "blur passes" a phantom costs on this machine.
"""

from __future__ import annotations

import argparse
import resource
import sys
import time
from pathlib import Path

import numpy as np
from scipy import ndimage

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from inference.phantom import PhantomSpec, generate

SHAPE = (300, 512, 512)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=1)
    parser.add_argument("--kind", default="lumbar")
    args = parser.parse_args()
    spec = PhantomSpec.from_seed(
        args.seed, args.kind, spacing_mm=(1.0, 0.7, 0.7), shape=SHAPE, fov_mm=358.4
    )
    times = []
    for _ in range(args.repeat):
        t0 = time.perf_counter()
        ph = generate(spec)
        times.append(time.perf_counter() - t0)
    print(f"grid {ph.hu.shape} spacing {spec.spacing_mm} mm, kind {spec.kind}, seed {spec.seed}")
    print(f"bone voxels {int((ph.labels > 0).sum())}, levels {', '.join(spec.level_names)}")
    for k, v in sorted(ph.timings.items()):
        print(f"  stage {k:<14s} {v:7.2f} s")
    print(
        f"phantom generation: best {min(times):.2f} s, mean {np.mean(times):.2f} s (target < 60 s)"
    )
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"peak RSS of this process: {peak:.0f} MB (hu float32 {ph.hu.nbytes / 2**20:.0f} MB)")
    t0 = time.perf_counter()
    ndimage.gaussian_filter(ph.hu, 1.0)
    peer = time.perf_counter() - t0
    print(f"peer: one gaussian_filter(sigma=1 voxel) on the same grid {peer:.2f} s")
    print(f"ratio phantom / peer = {min(times) / peer:.1f}")


if __name__ == "__main__":
    main()

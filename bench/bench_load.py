"""Benchmark: load a 512×512×N CT series (uncompressed, JPEG 2000, RLE) with dicom_io.load_series.

Writes synthetic series with dicom_io.write_ct_series into a temporary folder, then loads each in a
fresh child process (so that peak memory is the load's own) and prints slices/s of a second load
(the first, also printed, pays one-off imports of the pixel decoders) and peak RSS. The
peer, measured in the same run on the same files, is SimpleITK's ImageSeriesReader (GDCM), which
also sorts by position and applies the rescale. Real JPEG 2000 files from the shared data are
timed too when present.

    .venv/bin/python bench/bench_load.py [--slices 400] [--repeats 1]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def _rss_mb() -> float:
    """Peak resident memory of this process (VmHWM: unlike ru_maxrss, not inherited over exec)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return float(line.split()[1]) / 1024.0
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def child(kind: str, folder: Path, repair: bool) -> None:
    """Run one load in this (fresh) process; print a JSON line with seconds and peak memory.

    Both kinds import the same modules first, so their peak RSS compare. For spinenode a second
    load under tracemalloc gives the peak of Python + NumPy allocations during a load.
    """
    import tracemalloc

    import SimpleITK as sitk  # noqa: N813 (the usual alias)

    from dicom_io import LoadPolicy, load_series

    def load() -> int:
        if kind.startswith("spinenode"):
            workers = int(kind.partition("x")[2] or 1)  # "spinenode" or "spinenode-x2"
            policy = LoadPolicy(repair_uids=repair)
            return load_series(folder, policy=policy, workers=workers).shape[0]
        reader = sitk.ImageSeriesReader()
        reader.SetFileNames(reader.GetGDCMSeriesFileNames(str(folder)))
        reader.SetOutputPixelType(sitk.sitkFloat32)
        size: tuple[int, int, int] = reader.Execute().GetSize()
        return size[2]

    start = time.perf_counter()
    slices = load()
    cold = time.perf_counter() - start
    start = time.perf_counter()
    load()
    seconds = time.perf_counter() - start
    result = {"seconds": seconds, "cold": cold, "slices": slices, "rss_peak": _rss_mb()}
    result["traced_peak"] = 0.0
    if kind == "spinenode":  # tracemalloc sees this process only
        tracemalloc.start()
        load()
        result["traced_peak"] = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    print(json.dumps(result))


def _phantom(slices: int) -> np.ndarray:
    """A body-like HU volume: air, an elliptic body of soft tissue, a bony column, noise."""
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[:512, :512]
    body = ((yy - 256) / 180.0) ** 2 + ((xx - 256) / 230.0) ** 2 < 1
    spine = ((yy - 330) / 35.0) ** 2 + ((xx - 256) / 35.0) ** 2 < 1
    plane = np.where(body, 40.0, -1000.0)
    plane[spine] = 700.0
    hu = np.empty((slices, 512, 512), dtype=np.float32)
    for k in range(slices):
        hu[k] = plane + rng.normal(0, 15, size=plane.shape).astype(np.float32)
    np.rint(hu, out=hu)
    return np.clip(hu, -1024, 3000, out=hu)


def _write(folder: Path, slices: int, syntax: str) -> float:
    from dicom_io import CTSeriesSpec, write_ct_series

    spec = CTSeriesSpec(
        "Bench^Phantom",
        "BENCH",
        "19700101",
        "O",
        "1.2.826.0.1.3680043.8.498.5.1",
        "1.2.826.0.1.3680043.8.498.5.2",
        "1.2.826.0.1.3680043.8.498.5.3",
        "20240101",
        "120000",
        "B1",
        "1",
        1,
        "bench",
        "LSPINE",
    )
    affine = np.diag([1.0, 0.7, 0.7, 1.0])
    affine[:3, [0, 1, 2]] = np.array([[0, 0, 0.7], [0, 0.7, 0], [1.0, 0, 0]])
    start = time.perf_counter()
    write_ct_series(_phantom(slices), affine, folder, spec, transfer_syntax=syntax)
    return time.perf_counter() - start


def _run_child(kind: str, folder: Path, repair: bool) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", kind, str(folder)]
    command += ["--repair"] if repair else []
    out = subprocess.run(command, capture_output=True, text=True, check=True, cwd=REPO)
    result: dict[str, float] = json.loads(out.stdout.strip().splitlines()[-1])
    return result


def _report(
    label: str, folder: Path, repeats: int, repair: bool = False, parallel: bool = False
) -> None:
    size_mb = sum(p.stat().st_size for p in folder.iterdir()) / 1e6
    runs: dict[str, dict[str, float]] = {}
    kinds = ["spinenode", "simpleitk"] + (["spinenode-x2"] if parallel else [])
    for kind in kinds:
        best = min(
            (_run_child(kind, folder, repair) for _ in range(repeats)), key=lambda r: r["seconds"]
        )
        runs[kind] = best
        traced = f"  traced peak {best['traced_peak']:.0f} MB" if best["traced_peak"] else ""
        print(
            f"{label:<28} {kind:<10} {best['slices']:4.0f} slices {best['seconds']:7.2f} s "
            f"{best['slices'] / best['seconds']:7.1f} slices/s (first load in the process "
            f"{best['cold']:.2f} s)  peak RSS {best['rss_peak']:5.0f} MB{traced}"
        )
    ratio = runs["simpleitk"]["seconds"] / runs["spinenode"]["seconds"]
    volume_mb = runs["spinenode"]["slices"] * 512 * 512 * 4 / 2**20
    print(
        f"{label:<28} spinenode speed / SimpleITK speed = {ratio:.2f}; files {size_mb:.0f} MB, "
        f"float32 volume {volume_mb:.0f} MB"
    )
    if parallel:
        ratio = runs["spinenode"]["seconds"] / runs["spinenode-x2"]["seconds"]
        print(f"{label:<28} spinenode 2 decoding processes / 1 process speed = {ratio:.2f}")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=400)
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--child", nargs=2, metavar=("KIND", "FOLDER"), help=argparse.SUPPRESS)
    parser.add_argument("--repair", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child[0], Path(args.child[1]), args.repair)
        return 0
    from pydicom.pixels.encoders import JPEG2000LosslessEncoder
    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, RLELossless

    print(f"volume 512×512×{args.slices}, 1 mm slices; cpu count {os.cpu_count()}")
    syntaxes = [("uncompressed", ExplicitVRLittleEndian), ("RLE", RLELossless)]
    if JPEG2000LosslessEncoder.is_available:
        syntaxes.append(("JPEG 2000 lossless", JPEG2000Lossless))
    else:
        print("no JPEG 2000 encoder installed: timing RLE and the real JPEG 2000 files only")
    with tempfile.TemporaryDirectory(prefix="bench_load_") as tmp:
        for label, syntax in syntaxes:
            folder = Path(tmp) / label.replace(" ", "_")
            seconds = _write(folder, args.slices, syntax)
            print(f"{label:<28} written in {seconds:.1f} s")
            _report(label, folder, args.repeats, parallel=syntax == JPEG2000Lossless)
            for path in folder.iterdir():
                path.unlink()
    data = Path(os.environ.get("SPINENODE_DATA", REPO.parent / "shared" / "data"))
    real = data / "real-dicom" / "totalseg-t11-t12"
    if real.is_dir():
        _report("real JPEG 2000 (20 slices)", real, max(args.repeats, 3), repair=True)
    else:
        print(f"real data not found at {real}: real JPEG 2000 timing skipped")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

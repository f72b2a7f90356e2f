"""Writer time and object sizes for a full-size result: 512 × 512 × 300 CT, T12–S1, 12 screws.

Run: ``.venv/bin/python bench/bench_writers.py [--slices N] [--repeat R]``

The result is built here (bone blocks for T12..S1 on a 0.7 × 0.7 × 1 mm grid, two convergent screws
per level L1..S1, both C2 sides), so the benchmark needs neither the phantom nor the planner.
Prints, for the SEG as BINARY and as LABELMAP, the build and save times, the frame count and the
file size, and LABELMAP/BINARY ratios measured in the same run; then the SR and the secondary
captures.
"""

from __future__ import annotations

import argparse
import datetime
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import CTImageStorage

from dicom_io.derived import DerivedSeries, source_datasets
from dicom_io.outputs import OutputOptions, write_outputs
from dicom_io.report import AnalysisReport
from dicom_io.seg.sop import Equipment, SegmentationKind, build_segmentation
from dicom_io.sr.sop import build_measurement_report
from dicom_io.volume import CTVolume, SourceInstance

ROWS = COLS = 512
PIXEL_MM = 0.7
LEVELS = ("T12", "L1", "L2", "L3", "L4", "L5", "S1")
VERSE = {"T12": 19, "L1": 20, "L2": 21, "L3": 22, "L4": 23, "L5": 24, "S1": 26}
WHEN = datetime.datetime(2024, 1, 2, 12, 0, 0)
EQUIPMENT = Equipment("spinenode", "spinenode", "bench", "1")


def _affine(slices: int) -> np.ndarray:
    a = np.eye(4)
    a[:3, 0] = (0.0, 0.0, 1.0)
    a[:3, 1] = (0.0, PIXEL_MM, 0.0)
    a[:3, 2] = (PIXEL_MM, 0.0, 0.0)
    a[:3, 3] = (-ROWS * PIXEL_MM / 2, -COLS * PIXEL_MM / 2, -slices / 2)
    return a


def _mm(affine: np.ndarray, index: tuple[float, float, float]) -> list[float]:
    return [round(float(v), 2) for v in (affine @ np.array([*index, 1.0]))[:3]]


def build_result(slices: int) -> tuple[CTVolume, np.ndarray, np.ndarray, dict[str, Any]]:
    """CT, VerSe labels, C2 parts and result.json for the benchmark."""
    affine = _affine(slices)
    labels = np.zeros((slices, ROWS, COLS), dtype=np.uint8)
    height = slices // len(LEVELS)
    screws, vertebrae = [], []
    for k, level in enumerate(LEVELS):
        z0, z1 = k * height + 3, (k + 1) * height - 3
        labels[z0:z1, 200:300, 206:306] = VERSE[level]  # body
        labels[z0 + 5 : z1 - 5, 300:360, 220:292] = VERSE[level]  # posterior elements
        zc = (z0 + z1) / 2
        vertebrae.append(
            {"level": level, "label": VERSE[level], "centroid_mm": _mm(affine, (zc, 270, 256)),
             "confidence": 0.9}
        )  # fmt: skip
        if level == "T12":
            continue
        for side, sign in (("left", 1), ("right", -1)):
            entry = _mm(affine, (zc, 355, 256 + sign * 32))
            tip = _mm(affine, (zc, 215, 256 + sign * 10))
            screws.append(
                {"level": level, "side": side, "entry_mm": entry, "tip_mm": tip,
                 "length_mm": 45.0, "diameter_mm": 6.5,
                 "channel_mm": round(float(np.linalg.norm(np.subtract(tip, entry))), 2),
                 "pta_deg": 9.0, "psa_deg": 0.5, "gr_grade": "A", "breach_mm": 0.0,
                 "breach_direction": None, "babu_grade": 0}
            )  # fmt: skip
    hu = np.full(labels.shape, 40.0, dtype=np.float32)
    hu[labels > 0] = 450.0
    parts = np.zeros_like(labels)
    c2 = [
        {"side": side, "mpd_mm": mpd, "mpd_kind": "outer",
         "location_mm": _mm(affine, (slices - 10, 330, 256 + sign * 30)),
         "axis_mm": [0.0, -1.0, 0.0], "risk": risk, "probability_feasible": p,
         "method": "logistic"}
        for side, sign, mpd, risk, p in (
            ("left", 1, 5.8, "low", 0.9), ("right", -1, 4.2, "high", 0.3)
        )
    ]  # fmt: skip
    header = Dataset()
    for kw, value in (
        ("PatientName", "Bench^Writer"), ("PatientID", "BENCH"), ("PatientBirthDate", "19700101"),
        ("PatientSex", "O"), ("StudyDate", "20240102"), ("StudyTime", "120000"),
        ("AccessionNumber", "B1"), ("StudyID", "1"), ("ReferringPhysicianName", ""),
        ("Modality", "CT"), ("Manufacturer", "bench"),
    ):  # fmt: skip
        setattr(header, kw, value)
    sources = tuple(SourceInstance(CTImageStorage, f"2.25.{10**20 + i}") for i in range(slices))
    volume = CTVolume(hu, affine, "2.25.1001", "2.25.1002", "2.25.1003", sources, header)
    result = {"frame": "LPS", "engine": "geometric", "version": "bench", "vertebrae": vertebrae,
              "screws": screws, "c2": c2, "warnings": [], "timings_s": {}}  # fmt: skip
    return volume, labels, parts, result


def _timed(fn: Callable[[], Any], repeat: int) -> tuple[float, Any]:
    times, value = [], None
    for _ in range(repeat):
        t0 = time.perf_counter()
        value = fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times), value


def bench_seg(volume: CTVolume, labels: np.ndarray, report: AnalysisReport, repeat: int) -> None:
    sources = source_datasets(volume)
    series = DerivedSeries("2.25.2001", 7701, "Spine segmentation", WHEN)
    rows = {}
    variants = (
        ("BINARY", SegmentationKind.BINARY, False),
        ("LABELMAP", SegmentationKind.LABELMAP, False),
        ("LABELMAP+RLE", SegmentationKind.LABELMAP, True),
    )
    with tempfile.TemporaryDirectory() as tmp:
        for name, kind, rle in variants:
            build_s, seg = _timed(
                lambda kind=kind, rle=rle: build_segmentation(
                    volume, sources, report, (labels, None), series=series,
                    equipment=EQUIPMENT, kind=kind, compress_labelmap=rle,
                ),
                repeat,
            )  # fmt: skip
            path = Path(tmp) / f"seg_{name}.dcm"
            save_s, _ = _timed(lambda seg=seg, path=path: seg.save_as(path), repeat)
            rows[name] = (build_s, save_s, int(seg.NumberOfFrames), path.stat().st_size)
            print(
                f"SEG {name:12s}: build {build_s:6.2f} s  save {save_s:5.2f} s  "
                f"frames {rows[name][2]:5d}  size {rows[name][3] / 1e6:7.2f} MB  "
                f"segments {len(seg.SegmentSequence)}"
            )
    b = rows["BINARY"]
    for name in ("LABELMAP", "LABELMAP+RLE"):
        lm = rows[name]
        print(
            f"{name} / BINARY: build time {lm[0] / b[0]:.2f}x, size {lm[3] / b[3]:.3f}x, "
            f"frames {lm[2] / b[2]:.2f}x"
        )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--slices", type=int, default=300)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    t0 = time.perf_counter()
    volume, labels, parts, result = build_result(args.slices)
    report = AnalysisReport.from_json(result)
    print(
        f"result: CT {volume.shape}, {len(report.vertebrae)} vertebrae, {len(report.screws)} "
        f"screws, {len(report.c2)} C2 sides (built in {time.perf_counter() - t0:.1f} s)"
    )
    bench_seg(volume, labels, report, args.repeat)
    sources = source_datasets(volume)
    series = DerivedSeries("2.25.2002", 7702, "Screw plan report", WHEN)
    sr_s, sr = _timed(
        lambda: build_measurement_report(
            ("2.25.1002", "2.25.1003"), sources, report, None, series=series, equipment=EQUIPMENT
        ),
        args.repeat,
    )
    with tempfile.TemporaryDirectory() as tmp:
        sr.save_as(Path(tmp) / "sr.dcm")
        print(f"SR: build {sr_s:.3f} s  size {(Path(tmp) / 'sr.dcm').stat().st_size / 1e3:.1f} kB")
        options = OutputOptions(seg=False, sr=False, created=WHEN)
        sc_s, paths = _timed(
            lambda: write_outputs(volume, report, labels, parts, Path(tmp) / "sc", options=options),
            args.repeat,
        )
        total = sum(p.stat().st_size for p in paths)
        print(f"SC: {len(paths)} objects in {sc_s:.2f} s, {total / 1e6:.2f} MB in all")
        all_s, paths = _timed(
            lambda: write_outputs(
                volume, report, labels, parts, Path(tmp) / "all", options=OutputOptions()
            ),
            1,
        )
        print(f"write_outputs (BINARY SEG + SR + SC): {all_s:.2f} s, {len(paths)} files")


if __name__ == "__main__":
    main()

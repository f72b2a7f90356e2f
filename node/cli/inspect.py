"""``spinenode inspect PATH``: list the CT series in a folder and whether each one loads.

For each series: its UID, modality, number of files, then either the volume (shape, spacing,
orientation, warnings) or the reason it is refused. Patient name, ID and birth date are never
printed. Exit status 0 if at least one series loads, 2 otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np

from dicom_io import CTVolume, LoadPolicy, SeriesFiles, TiltPolicy, find_series, load_series
from dicom_io.errors import DicomIOError

NAME = "inspect"
HELP = "list the DICOM series under a folder (or one file) and load each as a CT volume"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("path", type=Path, help="a folder of DICOM files, or one DICOM file")
    parser.add_argument(
        "--repair-uids",
        action="store_true",
        help="repair empty or malformed UIDs (deterministically) instead of refusing the series",
    )
    parser.add_argument(
        "--workers", type=int, default=1, help="decode files in this many processes (default 1)"
    )
    parser.add_argument(
        "--tilt",
        choices=[t.value for t in TiltPolicy],
        default=TiltPolicy.RESAMPLE.value,
        help="gantry tilt: resample onto an orthogonal grid (default), keep sheared, or refuse",
    )


def _orientation_name(volume: CTVolume) -> str:
    """The patient axes (LPS letters) the slice, row and column axes point along most."""
    letters = ("LR", "PA", "SI")
    names = []
    for axis in range(3):
        v = volume.affine[:3, axis]
        k = int(np.argmax(np.abs(v)))
        names.append(letters[k][0] if v[k] > 0 else letters[k][1])
    return "".join(names)


def _describe(volume: CTVolume) -> list[str]:
    spacing = ", ".join(f"{s:.3f}" for s in volume.spacing)
    cosines = ", ".join(f"{v:+.3f}" for v in volume.affine[:3, 2] / volume.spacing[2])
    cosines += " / " + ", ".join(f"{v:+.3f}" for v in volume.affine[:3, 1] / volume.spacing[1])
    lines = [
        f"  loaded: shape (slices, rows, columns) = {volume.shape}",
        f"  spacing mm (slice, row, column) = ({spacing})",
        f"  axes point to (slice, row, column) = {_orientation_name(volume)}; "
        f"row/column cosines = {cosines}",
        f"  HU range {float(volume.hu.min()):.0f} … {float(volume.hu.max()):.0f}",
    ]
    lines += [f"  warning: {w}" for w in volume.warnings]
    return lines


def _series_report(series: SeriesFiles, policy: LoadPolicy, workers: int) -> tuple[bool, list[str]]:
    number = "?" if series.series_number is None else str(series.series_number)
    head = (
        f"series {series.series_instance_uid or '(empty SeriesInstanceUID)'}: "
        f"{series.modality or '?'} #{number}, {len(series.paths)} file(s)"
    )
    try:
        volume = load_series(series, policy=policy, workers=workers)
    except DicomIOError as exc:
        return False, [head, f"  refused ({type(exc).__name__}): {exc}"]
    return True, [head, *_describe(volume)]


def run(args: argparse.Namespace) -> int:
    path: Path = args.path
    policy = LoadPolicy(repair_uids=args.repair_uids, tilt=TiltPolicy(args.tilt))
    try:
        found = find_series(path)
    except DicomIOError as exc:
        print(f"{path}: {exc}")
        return 2
    if not found:
        print(f"{path}: no DICOM files found")
        return 2
    print(f"{path}: {len(found)} series")
    loaded = 0
    for series in found:
        ok, lines = _series_report(series, policy, max(1, args.workers))
        loaded += ok
        print("\n".join(lines))
    return 0 if loaded else 2

"""``spinenode analyze INPUT --out DIR``: plan lumbosacral pedicle screws on one CT.

INPUT is a DICOM series folder or a NIfTI file. Writes ``DIR/result.json`` and
``DIR/labels.nii.gz``; prints one line per screw. With ``--dicom`` (DICOM input only) also writes
the SEG, the TID 1500 SR and the secondary captures to ``DIR/dicom/``. Exit 0 on success, 2 when the
input cannot be read, 3 when there is nothing to analyse (no lumbar spine), 1 on an analysis error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from inference.errors import InferenceError, NotApplicableError
from inference.pipeline import AnalysisOutput
from node.analysis import AnalysisInputError, analyze_path

NAME = "analyze"
HELP = "plan lumbosacral pedicle screws on a CT (DICOM folder or NIfTI file)"

EXIT_BAD_INPUT = 2
EXIT_NOT_APPLICABLE = 3


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("input", type=Path, help="DICOM series folder or NIfTI file (.nii/.nii.gz)")
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument(
        "--dicom",
        action="store_true",
        help="also write SEG, SR and secondary captures to OUT/dicom (DICOM input only)",
    )
    parser.add_argument(
        "--labelmap", action="store_true", help="with --dicom: write the SEG as a LABELMAP"
    )


def _is_nifti(path: Path) -> bool:
    return path.is_file() and path.name.lower().endswith((".nii", ".nii.gz"))


def _write_dicom(args: argparse.Namespace, out: AnalysisOutput) -> int:
    """Write the result objects for the DICOM input to ``OUT/dicom``; an exit code."""
    from dicom_io.errors import DicomIOError
    from dicom_io.outputs import OutputOptions, write_outputs
    from dicom_io.report import AnalysisReport
    from dicom_io.seg.sop import SegmentationKind
    from dicom_io.series import load_series

    kind = SegmentationKind.LABELMAP if args.labelmap else SegmentationKind.BINARY
    folder = args.out / "dicom"
    try:
        volume = load_series(args.input)  # the source images the objects reference
        paths = write_outputs(
            volume,
            AnalysisReport.from_json(out.result.to_json()),
            out.labels,
            None,
            folder,
            options=OutputOptions(segmentation_type=kind),
        )
    except DicomIOError as exc:
        print(f"spinenode analyze: cannot write the DICOM results: {exc}", file=sys.stderr)
        return 1
    print(f"DICOM results: {len(paths)} files in {folder}")
    return 0


def run(args: argparse.Namespace) -> int:
    if args.dicom and _is_nifti(args.input):
        print(
            "spinenode analyze: --dicom needs a DICOM input (the objects reference its images)",
            file=sys.stderr,
        )
        return EXIT_BAD_INPUT
    try:
        out = analyze_path(args.input, args.out)
    except AnalysisInputError as exc:
        print(f"spinenode analyze: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NotApplicableError as exc:
        print(f"spinenode analyze: nothing to analyse: {exc}", file=sys.stderr)
        return EXIT_NOT_APPLICABLE
    except InferenceError as exc:
        print(f"spinenode analyze: analysis failed: {exc}", file=sys.stderr)
        return 1
    result = out.result
    print(f"{'level':<6}{'side':<7}{'len':>6}{'diam':>6}{'PTA':>7}{'PSA':>7}  GR  Babu")
    for s in result.screws:
        print(
            f"{s.level:<6}{s.side!s:<7}{s.length_mm:>6.1f}{s.diameter_mm:>6.1f}"
            f"{s.pta_deg:>7.1f}{s.psa_deg:>7.1f}  {s.gr_grade:<3} {s.babu_grade}"
        )
    levels = ", ".join(v.level for v in result.vertebrae)
    print(f"vertebrae: {levels}; {len(result.screws)} screws; written to {args.out}")
    for w in result.warnings:
        print(f"warning: {w}")
    return _write_dicom(args, out) if args.dicom else 0

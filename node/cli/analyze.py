"""``spinenode analyze INPUT --out DIR``: plan lumbosacral pedicle screws and assess C2 on one CT.

INPUT is a DICOM series folder or a NIfTI file. Writes ``DIR/result.json`` and
``DIR/labels.nii.gz``; prints one line per screw. With ``--dicom`` (DICOM input only) also writes
the SEG, the TID 1500 SR and the secondary captures to ``DIR/dicom/``. Exit 0 on success, 2 when the
input cannot be read, 3 when there is nothing to analyse (neither a lumbar spine nor a measurable
C2), 1 on an analysis error.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from dicom_io.errors import DicomIOError
from dicom_io.seg.sop import SegmentationKind
from inference.errors import InferenceError, NotApplicableError
from inference.results import AnalysisResult
from node.analysis import AnalysisInputError, AnalysisOptions, run_analysis

NAME = "analyze"
HELP = "plan lumbosacral pedicle screws and assess C2 screws on a CT (DICOM folder or NIfTI)"

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


def _print_result(result: AnalysisResult, out: Path) -> None:
    if result.screws:
        print(f"{'level':<6}{'side':<7}{'len':>6}{'diam':>6}{'PTA':>7}{'PSA':>7}  GR  Babu")
    for s in result.screws:
        print(
            f"{s.level:<6}{s.side!s:<7}{s.length_mm:>6.1f}{s.diameter_mm:>6.1f}"
            f"{s.pta_deg:>7.1f}{s.psa_deg:>7.1f}  {s.gr_grade:<3} {s.babu_grade}"
        )
    for c in result.c2:
        print(
            f"C2 {c.side!s:<6} MPD {c.mpd_mm:.2f} mm ({c.mpd_kind}), {c.risk} risk, "
            f"p(feasible) {c.probability_feasible:.2f}"
        )
    levels = ", ".join(v.level for v in result.vertebrae) or "none"
    print(f"vertebrae: {levels}; {len(result.screws)} screws; written to {out}")
    for w in result.warnings:
        print(f"warning: {w}")


def run(args: argparse.Namespace) -> int:
    kind = SegmentationKind.LABELMAP if args.labelmap else SegmentationKind.BINARY
    options = AnalysisOptions(dicom=args.dicom, segmentation_kind=kind)
    try:
        run_ = run_analysis(args.input, args.out, options)
    except AnalysisInputError as exc:
        print(f"spinenode analyze: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except NotApplicableError as exc:
        print(f"spinenode analyze: nothing to analyse: {exc}", file=sys.stderr)
        return EXIT_NOT_APPLICABLE
    except (InferenceError, DicomIOError) as exc:
        print(f"spinenode analyze: analysis failed: {exc}", file=sys.stderr)
        return 1
    _print_result(run_.output.result, args.out)
    if args.dicom:
        print(f"DICOM results: {len(run_.dicom_outputs)} files in {args.out / 'dicom'}")
    return 0

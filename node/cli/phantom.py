"""``spinenode phantom --seed N --kind lumbar|cervical --out DIR``: a synthetic spine CT with truth.

Writes ``DIR/dicom/`` (a CT series, deterministic UIDs from the seed and grid),
``DIR/labels.nii.gz`` (VerSe vertebra ids), ``DIR/parts.nii.gz`` (pedicles, facet joint spaces,
C2 isthmi; see docs/phantoms.md) and ``DIR/truth.json`` (DICOM LPS mm). The same arguments give
the same files.
"""

from __future__ import annotations

import argparse
import datetime
import json
import logging
import uuid
from pathlib import Path

from dicom_io.ct_writer import CTSeriesSpec, write_ct_series
from inference.errors import InferenceError
from inference.nifti import write_nifti
from inference.phantom import Phantom, PhantomKind, PhantomSpec, generate
from inference.phantom.generate import spec_json

NAME = "phantom"
HELP = "generate a synthetic spine CT phantom (DICOM series, label maps, truth.json)"

logger = logging.getLogger(__name__)

UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://spinenode.invalid/phantom-uids")
_FAMILY = ("Lindqvist", "Moreau", "Okafor", "Tanaka", "Novak", "Silva", "Byrne", "Kowalski")
_GIVEN = {"F": ("Anna", "Maria", "Ines", "Yuki"), "M": ("Jonas", "Pierre", "Kofi", "Marek")}
_BODY_PART = {
    PhantomKind.LUMBAR: "LSPINE",
    PhantomKind.CERVICAL: "CSPINE",
    PhantomKind.FULL: "SPINE",
}


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--seed", type=int, required=True, help="random seed (same seed → same files)"
    )
    parser.add_argument(
        "--kind", choices=[k.value for k in PhantomKind], default="lumbar", help="anatomy"
    )
    parser.add_argument("--out", type=Path, required=True, help="output folder (created)")
    parser.add_argument(
        "--spacing",
        type=float,
        nargs=3,
        metavar=("SLICE", "ROW", "COL"),
        help="voxel spacing in mm (default: drawn from the seed)",
    )
    parser.add_argument(
        "--shape", type=int, nargs=3, metavar=("SLICES", "ROWS", "COLS"), help="grid size"
    )
    parser.add_argument("--noise", type=float, help="noise standard deviation in HU")
    parser.add_argument("--fov", type=float, help="in-plane field of view in mm (grid from it)")
    parser.add_argument(
        "--oblique",
        type=float,
        nargs=3,
        metavar=("X", "Y", "Z"),
        help="tilt the acquisition grid about LPS x, y, z (degrees)",
    )
    parser.add_argument(
        "--enhanced", action="store_true", help="one Enhanced CT multi-frame instead of slices"
    )
    parser.add_argument("--no-dicom", action="store_true", help="skip the DICOM series")


def phantom_uid(spec: PhantomSpec, role: str) -> str:
    """A ``2.25`` UID derived from every parameter of ``spec`` and ``role``."""
    name = json.dumps(spec_json(spec), sort_keys=True) + "/" + role
    return f"2.25.{uuid.uuid5(UID_NAMESPACE, name).int}"


def series_spec(spec: PhantomSpec) -> CTSeriesSpec:
    """Synthetic but realistic patient, study and series attributes for ``spec``."""
    sex = "F" if spec.seed % 2 else "M"
    family = _FAMILY[spec.seed % len(_FAMILY)]
    given = _GIVEN[sex][(spec.seed // 2) % 4]
    study = datetime.date(2025, 1, 6) + datetime.timedelta(days=spec.seed % 365)
    birth = study - datetime.timedelta(days=round(spec.age_years * 365.25))
    return CTSeriesSpec(
        patient_name=f"{family}^{given}^^^PHANTOM",
        patient_id=f"PH{spec.seed:07d}",
        patient_birth_date=birth.strftime("%Y%m%d"),
        patient_sex=sex,
        study_instance_uid=phantom_uid(spec, "study"),
        series_instance_uid=phantom_uid(spec, "series"),
        frame_of_reference_uid=phantom_uid(spec, "frame"),
        study_date=study.strftime("%Y%m%d"),
        study_time=f"{8 + spec.seed % 10:02d}{(spec.seed * 7) % 60:02d}00",
        accession_number=f"SPN{spec.seed:08d}",
        study_id=str(1000 + spec.seed % 9000),
        series_number=2 + spec.seed % 5,
        series_description=f"Synthetic {spec.kind} spine phantom {spec.spacing_mm[0]:g} mm",
        body_part_examined=_BODY_PART[spec.kind],
        institution_name="spinenode phantom",
        slice_thickness_mm=spec.spacing_mm[0],
    )


def write_phantom(
    ph: Phantom, out: Path, *, dicom: bool = True, enhanced: bool = False
) -> list[Path]:
    """Write the files of ``ph`` into ``out``; returns them."""
    out.mkdir(parents=True, exist_ok=True)
    files = [
        write_nifti(out / "labels.nii.gz", ph.labels, ph.affine),
        write_nifti(out / "parts.nii.gz", ph.parts, ph.affine),
    ]
    truth = out / "truth.json"
    truth.write_text(json.dumps(ph.truth.to_json(), indent=1) + "\n", encoding="utf-8")
    files.append(truth)
    if dicom:
        files += write_ct_series(
            ph.hu, ph.affine, out / "dicom", series_spec(ph.spec), enhanced=enhanced
        )
    return files


def run(args: argparse.Namespace) -> int:
    overrides: dict[str, object] = {}
    if args.spacing:
        overrides["spacing_mm"] = tuple(args.spacing)
    if args.shape:
        overrides["shape"] = tuple(args.shape)
    if args.noise is not None:
        overrides["noise_hu"] = args.noise
    if args.fov is not None:
        overrides["fov_mm"] = args.fov
    if args.oblique:
        overrides["oblique_deg"] = tuple(args.oblique)
    try:
        spec = PhantomSpec.from_seed(args.seed, args.kind, **overrides)
        ph = generate(spec)
    except InferenceError as exc:
        print(f"error: {exc}")
        return 2
    files = write_phantom(ph, args.out, dicom=not args.no_dicom, enhanced=args.enhanced)
    levels = ", ".join(spec.level_names) if spec.kind != PhantomKind.CERVICAL else "C1, C2, C3"
    print(f"phantom seed {spec.seed} ({spec.kind}): grid {ph.hu.shape}, spacing {spec.spacing_mm}")
    print(f"levels: {levels}; {len(files)} files in {args.out}")
    for line in _summary(ph):
        print(line)
    return 0


def _summary(ph: Phantom) -> list[str]:
    """One line per reference screw pair and per C2 side (the truth, for a quick look)."""
    lines = []
    for v in ph.truth.vertebrae:
        for p in v.pedicles:
            sc = p.screw
            lines.append(
                f"  {v.level:<4s}{p.side:<6s} pedicle {p.width_mm:4.1f} x {p.height_mm:4.1f} mm, "
                f"screw {sc.length_mm:.0f} x {sc.diameter_mm:.1f} mm, "
                f"PTA {sc.pta_deg:5.1f}°, PSA {sc.psa_deg:5.1f}°"
            )
    for c in ph.truth.c2:
        lines.append(
            f"  C2  {c.side:<6s} MPD outer {c.mpd_outer_mm:.2f} mm, endosteal "
            f"{c.mpd_endosteal_mm:.2f} mm ({c.risk_outer} risk)"
        )
    return lines

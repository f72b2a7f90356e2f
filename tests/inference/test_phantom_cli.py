"""``spinenode phantom``: DICOM, NIfTI and truth.json on one grid, reproducible, dciodvfy-clean."""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
import pytest

from dicom_io import load_series
from inference.nifti import read_nifti
from node.cli import main

ARGS = ["--kind", "cervical", "--spacing", "2", "1.5", "1.5", "--shape", "24", "60", "70"]


def _run(out: Path, seed: int = 6) -> None:
    assert main(["phantom", "--seed", str(seed), "--out", str(out), *ARGS]) == 0


def test_files_share_one_grid_and_load_through_dicom_io(tmp_path: Path) -> None:
    _run(tmp_path / "a")
    labels, affine = read_nifti(tmp_path / "a" / "labels.nii.gz")
    parts, parts_affine = read_nifti(tmp_path / "a" / "parts.nii.gz")
    volume = load_series(tmp_path / "a" / "dicom")
    assert volume.hu.shape == labels.shape == parts.shape == (24, 60, 70)
    np.testing.assert_allclose(volume.affine, affine, atol=1e-3)
    np.testing.assert_allclose(parts_affine, affine, atol=1e-4)
    assert 2 in np.unique(labels)  # C2
    bone = volume.hu[labels > 0]
    assert np.median(bone) > 150 and np.median(volume.hu[labels == 0]) < 100
    truth = json.loads((tmp_path / "a" / "truth.json").read_text())
    assert truth["frame"] == "LPS" and truth["shape"] == [24, 60, 70]
    np.testing.assert_allclose(np.array(truth["affine"]), affine, atol=1e-3)
    assert volume.header.PatientID == "PH0000006" and volume.header.BodyPartExamined == "CSPINE"


def test_same_seed_same_files(tmp_path: Path) -> None:
    _run(tmp_path / "a")
    _run(tmp_path / "b")
    names = sorted(
        p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*") if p.is_file()
    )
    assert names == sorted(
        p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*") if p.is_file()
    )
    for name in names:
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


@pytest.mark.skipif(shutil.which("dciodvfy") is None, reason="dciodvfy (dicom3tools) not installed")
def test_series_is_dciodvfy_clean(tmp_path: Path) -> None:
    _run(tmp_path / "a", seed=9)
    files = sorted((tmp_path / "a" / "dicom").glob("*.dcm"))
    for path in (files[0], files[len(files) // 2]):
        result = subprocess.run(
            ["dciodvfy", str(path)], capture_output=True, text=True, check=False
        )
        report = result.stdout + result.stderr
        assert "Error" not in report and "Warning" not in report, report


def test_oblique_enhanced_series_keeps_the_grid(tmp_path: Path) -> None:
    out = tmp_path / "o"
    args = ["--spacing", "2", "1.5", "1.5", "--shape", "16", "40", "44"]
    extra = ["--oblique", "6", "-4", "12", "--enhanced", "--noise", "5"]
    assert (
        main(["phantom", "--seed", "2", "--kind", "cervical", "--out", str(out), *args, *extra])
        == 0
    )
    files = sorted((out / "dicom").glob("*.dcm"))
    assert [f.name for f in files] == ["ECT.dcm"]
    labels, affine = read_nifti(out / "labels.nii.gz")
    volume = load_series(files[0])
    np.testing.assert_allclose(volume.affine, affine, atol=1e-3)
    assert volume.hu.shape == labels.shape == (16, 40, 44)
    assert abs(affine[2, 0]) < 0.995 * np.linalg.norm(affine[:3, 0])  # slices really oblique

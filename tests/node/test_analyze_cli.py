"""``spinenode analyze``: NIfTI and DICOM inputs, outputs, exit codes and reasons."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from inference.nifti import read_nifti, write_nifti
from inference.phantom import PhantomSpec, generate
from inference.results import AnalysisResult
from node.cli import main


@pytest.fixture(scope="module")
def phantom_nifti(tmp_path_factory: pytest.TempPathFactory) -> Path:
    spec = PhantomSpec.from_seed(
        12,
        "lumbar",
        spacing_mm=(2.0, 1.0, 1.0),
        fov_mm=200.0,
        include_t12=False,
        include_l6=False,
        osteoporosis=False,
        cancellous_hu=180.0,
    )
    ph = generate(spec)
    path = tmp_path_factory.mktemp("in") / "ct.nii.gz"
    write_nifti(path, ph.hu.astype(np.int16), ph.affine)
    return path


def test_analyze_nifti_writes_result_and_labels(
    phantom_nifti: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert main(["analyze", str(phantom_nifti), "--out", str(out)]) == 0
    data = json.loads((out / "result.json").read_text())
    assert data["frame"] == "LPS"
    result = AnalysisResult.from_json(data)
    assert [v.level for v in result.vertebrae][:5] == ["L1", "L2", "L3", "L4", "L5"]
    assert len(result.screws) >= 8
    labels, affine = read_nifti(out / "labels.nii.gz")
    _, ct_affine = read_nifti(phantom_nifti)
    assert np.allclose(affine, ct_affine, atol=1e-3)
    assert set(np.unique(labels)) >= {20, 21, 22, 23, 24}
    printed = capsys.readouterr().out
    assert "L3" in printed and "left" in printed and "GR" in printed


def test_analyze_missing_input_is_a_plain_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code = main(["analyze", str(tmp_path / "nope"), "--out", str(tmp_path / "o")])
    assert code == 2
    assert "does not exist" in capsys.readouterr().err


def test_analyze_volume_without_spine_exits_not_applicable(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "water.nii.gz"
    write_nifti(path, np.zeros((30, 64, 64), dtype=np.int16), np.diag([2.0, 1.0, 1.0, 1.0]))
    assert main(["analyze", str(path), "--out", str(tmp_path / "o")]) == 3
    assert "nothing to analyse" in capsys.readouterr().err
    assert not (tmp_path / "o" / "result.json").exists()


@pytest.mark.realdata
def test_head_ct_without_lumbar_spine_exits_not_applicable(
    shared_data: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    folder = shared_data / "real-dicom" / "ge-head-gantry-tilt"
    assert main(["analyze", str(folder), "--out", str(tmp_path / "o")]) == 3
    err = capsys.readouterr().err
    assert "nothing to analyse" in err

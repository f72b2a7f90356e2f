"""`spinenode inspect`: lists series, loads or refuses each, never prints patient identity."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.cli import main
from tests.dicom_io.helpers import (
    SERIES_UID,
    axial_affine,
    make_hu,
    make_spec,
    rewrite,
    write_series,
)


def test_inspect_lists_loaded_and_refused_series(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(tmp_path / "good", make_hu((4, 40, 36)), axial_affine(tilt_deg=10.0))
    bad = write_series(tmp_path / "bad", make_hu((3, 40, 36)), spec=make_spec(SERIES_UID + ".5"))
    rewrite(bad, lambda ds, _: setattr(ds, "Modality", "MR"))
    assert main(["inspect", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "2 series" in out
    assert "shape (slices, rows, columns) = (4, 40, 36)" in out
    assert "spacing mm (slice, row, column) = (2.000, 0.800, 0.700)" in out
    assert "gantry tilt 10.0°" in out
    assert "refused (NotApplicableError)" in out and "not CT" in out
    assert "Test^Phantom" not in out and "TEST-001" not in out and "19700101" not in out


def test_inspect_exits_2_when_nothing_loads(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_series(tmp_path, make_hu((4, 40, 36)), axial_affine(tilt_deg=10.0))
    assert main(["inspect", "--tilt", "refuse", str(tmp_path)]) == 2
    assert "refused (GeometryError)" in capsys.readouterr().out
    assert main(["inspect", str(tmp_path / "nowhere")]) == 2
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["inspect", str(empty)]) == 2
    assert "no DICOM files" in capsys.readouterr().out


def test_inspect_repairs_uids_on_request(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    paths = write_series(tmp_path, make_hu((3, 40, 36)))
    rewrite(paths, lambda ds, _: setattr(ds, "SeriesInstanceUID", ""))
    assert main(["inspect", str(tmp_path)]) == 2
    assert main(["inspect", "--repair-uids", str(tmp_path)]) == 0
    assert "SeriesInstanceUID was empty" in capsys.readouterr().out


def test_inspect_one_enhanced_file(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    [path] = write_series(tmp_path, make_hu((4, 40, 36)), enhanced=True)
    assert main(["inspect", str(path)]) == 0
    out = capsys.readouterr().out
    assert f"series {SERIES_UID}: CT #2, 1 file(s)" in out
    assert "(4, 40, 36)" in out

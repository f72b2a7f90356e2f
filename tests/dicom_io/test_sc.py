"""Secondary captures: validity, screws where the plan puts them, burnt-in text, C2 frames."""

from __future__ import annotations

import datetime
from pathlib import Path

import numpy as np
import pydicom
import pytest

from dicom_io.derived import DerivedSeries, source_datasets
from dicom_io.sc import views
from dicom_io.sc.render import WARNING_COLOR, Canvas
from dicom_io.sc.sop import CaptureInfo, multi_frame, orientation_letter, single_frame
from dicom_io.seg.sop import Equipment
from tests.dicom_io import synthetic_result as syn

EQUIPMENT = Equipment("spinenode", "spinenode", "0.1.0", "0")
SERIES = DerivedSeries(
    "1.2.826.0.1.3680043.8.498.7001.93", 7703, "Screw plan images", datetime.datetime(2024, 1, 2)
)


def _level_canvas() -> Canvas:
    screws = views.numbered(syn.report())
    return views.level_canvas(syn.volume(), "L4", views.levels(screws)["L4"])


def _write_level(tmp_path: Path, name: str = "level.dcm") -> tuple[Path, Canvas]:
    canvas = _level_canvas()
    sc = single_frame(
        canvas.render(),
        canvas.panels[0][1],
        source_datasets(syn.volume())[0],
        CaptureInfo("1.2.826.0.1.3680043.8.498.7001.93.1", 1, "L4 planned screws"),
        series=SERIES,
        equipment=EQUIPMENT,
    )
    path = tmp_path / name
    sc.save_as(path, enforce_file_format=True)
    return path, canvas


def test_level_capture_is_valid_rgb_with_patient_and_study(tmp_path: Path) -> None:
    path, _ = _write_level(tmp_path)
    assert syn.dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7"
    assert ds.PhotometricInterpretation == "RGB"
    assert ds.BurnedInAnnotation == "YES"
    assert "verify before surgery" in ds.ImageComments
    assert ds.PatientID == syn.header().PatientID
    assert ds.StudyInstanceUID == syn.STUDY_UID
    assert list(ds.PatientOrientation) == [
        "L",
        "P",
    ]  # axial oblique: left to the right, anterior up


def test_screws_are_drawn_where_the_plan_puts_them(tmp_path: Path) -> None:
    path, canvas = _write_level(tmp_path)
    pixels = pydicom.dcmread(path).pixel_array
    screws = views.levels(views.numbered(syn.report()))["L4"]
    for n in screws:
        color = views.SIDE_COLORS[n.screw.side]
        entry, tip = np.array(n.screw.entry_mm), np.array(n.screw.tip_mm)
        panels = [0, 1 + screws.index(n)]  # the axial oblique and this screw's sagittal
        for panel in panels:
            for t in np.linspace(0.1, 0.9, 9):
                row, col = canvas.project(panel, entry + t * (tip - entry))
                assert tuple(pixels[row, col]) == color, (n.screw.name, panel, t)
    # a point 15 mm beside the screw's axis (in the axial plane) is not screw-coloured
    left = screws[0].screw
    off = (np.array(left.entry_mm) + np.array(left.tip_mm)) / 2 + np.array([15.0, 0.0, 0.0])
    row, col = canvas.project(0, off)
    assert tuple(pixels[row, col]) != views.SIDE_COLORS["left"]


def test_left_screw_appears_on_the_image_right_in_the_axial_view() -> None:
    canvas = _level_canvas()
    screws = views.levels(views.numbered(syn.report()))["L4"]
    left = canvas.project(0, screws[0].screw.entry_mm)[1]
    right = canvas.project(0, screws[1].screw.entry_mm)[1]
    assert left > right


def test_disclaimer_is_burnt_into_every_capture() -> None:
    image = _level_canvas().render()
    footer = image[-20:]
    assert np.all(footer == np.array(WARNING_COLOR), axis=-1).sum() > 50
    for frame in views.c2_frames(syn.volume(), syn.report().c2[0]):
        assert np.all(frame[-20:] == np.array(WARNING_COLOR), axis=-1).sum() > 50


def test_c2_multiframe_capture(tmp_path: Path) -> None:
    finding = syn.report().c2[1]  # right side, high risk
    frames = views.c2_frames(syn.volume(), finding)
    assert len(frames) == 5
    ds = multi_frame(
        frames,
        views.c2_planes(finding)[2],
        source_datasets(syn.volume())[0],
        CaptureInfo("1.2.826.0.1.3680043.8.498.7001.93.2", 2, "C2 right isthmus slices"),
        series=SERIES,
        equipment=EQUIPMENT,
    )
    path = tmp_path / "c2.dcm"
    ds.save_as(path, enforce_file_format=True)
    assert syn.dciodvfy_errors(path) == []
    back = pydicom.dcmread(path)
    assert back.SOPClassUID == "1.2.840.10008.5.1.4.1.1.7.4"
    assert int(back.NumberOfFrames) == 5
    assert [float(v) for v in back.PixelSpacing] == [views.C2_PIXEL_MM] * 2
    np.testing.assert_array_equal(back.pixel_array, np.stack(frames))
    # the MPD circle is drawn in the risk colour (red = high) around the narrowest section
    planes = views.c2_planes(finding)
    centre_row, centre_col = planes[2].project(finding.location_mm)
    radius = finding.mpd_mm / 2 / planes[2].pixel_mm
    header = Canvas(header=[""] * 3).header_height  # the C2 frames have 3 header lines
    ring = frames[2][
        round(centre_row) + header, round(centre_col + radius) - 1 : round(centre_col + radius) + 2
    ]
    assert any(tuple(p) == views.RISK_COLORS["high"] for p in ring)
    # the five slices are different cross-sections
    assert not np.array_equal(frames[0], frames[4])


def test_orientation_letters() -> None:
    assert orientation_letter([0.9, 0.1, 0.0]) == "L"
    assert orientation_letter([-0.9, 0.1, 0.0]) == "R"
    assert orientation_letter([0.0, -0.8, 0.2]) == "A"
    assert orientation_letter([0.0, 0.2, -0.8]) == "F"


def test_captures_are_deterministic(tmp_path: Path) -> None:
    first, _ = _write_level(tmp_path, "a.dcm")
    second, _ = _write_level(tmp_path, "b.dcm")
    assert first.read_bytes() == second.read_bytes()


def test_sagittal_views_show_anterior_on_the_left_and_superior_up() -> None:
    screws = views.numbered(syn.report())
    overview = views.overview_canvas(syn.volume(), screws)
    level = _level_canvas()
    for canvas, panel in ((overview, 0), (level, 1), (level, 2)):
        screw = screws[0].screw if panel != 2 else screws[1].screw
        tip, entry = canvas.project(panel, screw.tip_mm), canvas.project(panel, screw.entry_mm)
        assert tip[1] < entry[1]  # the tip is anterior to the entry
        above = np.array(screw.entry_mm) + np.array([0.0, 0.0, 10.0])
        assert canvas.project(panel, above)[0] < entry[0]
    plane = overview.panels[0][1]
    assert (orientation_letter(plane.u), orientation_letter(plane.v)) == ("P", "F")


def test_axial_oblique_shows_the_transverse_angle_of_a_single_screw() -> None:
    left = views.numbered(syn.report())[:1]  # L4 left alone: 11.3° medial in the axial plane
    plane = views.axial_oblique_plane(left)
    (r0, c0), (r1, c1) = plane.project(left[0].screw.entry_mm), plane.project(left[0].screw.tip_mm)
    angle = np.degrees(np.arctan2(abs(c1 - c0), abs(r1 - r0)))
    assert angle == pytest.approx(11.31, abs=0.1)
    assert r1 < r0  # the tip (anterior) is above the entry
    assert c1 < c0  # a left screw converges towards the image centre (patient right)

"""The TID 1500 measurement report: validity, read-back of numbers, units, codes and points."""

from __future__ import annotations

import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_io.derived import DerivedSeries, source_datasets
from dicom_io.seg.sop import Equipment, build_segmentation
from dicom_io.sr import codes as sn
from dicom_io.sr.read import NotAMeasurementReportError, ReadGroup, measurement_groups
from dicom_io.sr.sop import build_measurement_report
from tests.dicom_io import synthetic_result as syn

EQUIPMENT = Equipment("spinenode", "spinenode", "0.1.0", "0")
WHEN = datetime.datetime(2024, 1, 2, 11, 0, 0)
SEG_SERIES = DerivedSeries("1.2.826.0.1.3680043.8.498.7001.90", 7701, "Spine segmentation", WHEN)
SR_SERIES = DerivedSeries("1.2.826.0.1.3680043.8.498.7001.91", 7702, "Screw plan report", WHEN)


def _write(tmp_path: Path, name: str = "sr.dcm") -> tuple[Path, pydicom.Dataset]:
    volume, report = syn.volume(), syn.report()
    sources = source_datasets(volume)
    seg = build_segmentation(
        volume, sources, report, syn.label_maps(), series=SEG_SERIES, equipment=EQUIPMENT
    )
    sr = build_measurement_report(
        (volume.series_instance_uid, volume.frame_of_reference_uid),
        sources,
        report,
        seg,
        series=SR_SERIES,
        equipment=EQUIPMENT,
    )
    path = tmp_path / name
    sr.save_as(path, enforce_file_format=True)
    return path, seg


def _k(code: object) -> tuple[str, str]:
    return (code.scheme_designator, code.value)  # type: ignore[attr-defined]


def test_sr_is_valid_tid1500(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    assert syn.dciodvfy_errors(path) == []
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.88.34"  # Comprehensive 3D SR
    assert ds.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    assert ds.CompletionFlag == "COMPLETE"
    assert ds.PreliminaryFlag == "FINAL"
    assert ds.VerificationFlag == "UNVERIFIED"  # a planning aid, nobody signed it
    assert ds.CodingSchemeIdentificationSequence[0].CodingSchemeDesignator == sn.SCHEME


def test_screw_groups_read_back_with_numbers_units_codes_and_points(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    groups = measurement_groups(pydicom.dcmread(path))
    report = syn.report()
    assert len(groups) == len(report.screws) + len(report.c2)
    for screw, group in zip(report.screws, groups, strict=False):
        assert group.tracking_id == f"Screw {screw.name}"
        assert group.tracking_uid.startswith("2.25.")
        assert group.finding == _k(sn.PLANNED_SCREW)
        assert group.finding_site == ("SCT", "11994002")  # L4 vertebra
        assert group.laterality == _k(sn.LATERALITY[screw.side])
        expected = {
            sn.SCREW_LENGTH: (screw.length_mm, "mm"),
            sn.SCREW_DIAMETER: (screw.diameter_mm, "mm"),
            sn.CHANNEL_LENGTH: (screw.channel_mm, "mm"),
            sn.PTA: (screw.pta_deg, "deg"),
            sn.PSA: (screw.psa_deg, "deg"),
            sn.BREACH_DISTANCE: (screw.breach_mm, "mm"),
        }
        for code, (value, unit) in expected.items():
            got = group.measurements[_k(code)]
            assert got.value == pytest.approx(value, abs=1e-6), code
            assert got.unit == unit
        coords = group.measurements[_k(sn.SCREW_LENGTH)].coordinates
        np.testing.assert_allclose(coords[_k(sn.ENTRY_POINT)][1][0], screw.entry_mm, atol=1e-4)
        np.testing.assert_allclose(coords[_k(sn.TIP_POINT)][1][0], screw.tip_mm, atol=1e-4)
        kind, axis = coords[_k(sn.SCREW_AXIS)]
        assert kind == "POLYLINE"
        np.testing.assert_allclose(axis, [screw.entry_mm, screw.tip_mm], atol=1e-4)
        assert group.evaluations[_k(sn.GR_GRADE)] == _k(sn.GR_VALUES[screw.gr_grade])
        assert group.evaluations[_k(sn.BABU_GRADE)] == _k(sn.BABU_VALUES[screw.babu_grade])
    right = groups[1]
    assert right.evaluations[_k(sn.BREACH_DIRECTION)] == ("SCT", "255561001")  # medial


def _c2(groups: list[ReadGroup], side: str) -> ReadGroup:
    return next(g for g in groups if g.tracking_id == f"C2 pedicle {side}")


def test_c2_groups_read_back(tmp_path: Path) -> None:
    path, _ = _write(tmp_path)
    groups = measurement_groups(pydicom.dcmread(path))
    for finding in syn.report().c2:
        group = _c2(groups, finding.side)
        assert group.finding_site == ("SCT", "39976000")  # C2 vertebra
        assert group.laterality == _k(sn.LATERALITY[finding.side])
        mpd = group.measurements[_k(sn.MPD)]
        assert mpd.value == pytest.approx(finding.mpd_mm)
        assert mpd.unit == "mm"
        assert mpd.method == _k(sn.MPD_METHODS[finding.mpd_kind])
        np.testing.assert_allclose(
            mpd.coordinates[_k(sn.NARROWEST_SECTION)][1][0], finding.location_mm, atol=1e-4
        )
        probability = group.measurements[_k(sn.PROBABILITY_FEASIBLE)]
        assert probability.value == pytest.approx(finding.probability_feasible)
        assert probability.unit == "1"
        assert group.evaluations[_k(sn.C2_RISK)] == _k(sn.RISK_VALUES[finding.risk])


def test_sr_references_seg_and_every_source_image(tmp_path: Path) -> None:
    path, seg = _write(tmp_path)
    ds = pydicom.dcmread(path)
    referenced = {
        item.ReferencedSOPInstanceUID
        for study in ds.CurrentRequestedProcedureEvidenceSequence
        for series in study.ReferencedSeriesSequence
        for item in series.ReferencedSOPSequence
    }
    sources = {s.sop_instance_uid for s in syn.volume().sources}
    assert referenced == sources | {seg.SOPInstanceUID}
    assert ds.StudyInstanceUID == syn.STUDY_UID
    assert ds.PatientID == syn.header().PatientID


def test_sr_is_deterministic(tmp_path: Path) -> None:
    first, _ = _write(tmp_path, "a.dcm")
    second, _ = _write(tmp_path, "b.dcm")
    assert first.read_bytes() == second.read_bytes()


def test_reading_a_non_report_fails_clearly() -> None:
    with pytest.raises(NotAMeasurementReportError, match="not an SR"):
        measurement_groups(syn.header())


def test_highdicom_parses_the_report_as_tid1500(tmp_path: Path) -> None:
    """A second, independent reader (highdicom's TID 1500 parser) sees the same groups."""
    path, _ = _write(tmp_path)
    content = hd.sr.MeasurementReport.from_sequence([pydicom.dcmread(path)])
    groups = content.get_image_measurement_groups()
    report = syn.report()
    assert [g.tracking_identifier for g in groups] == [
        *(f"Screw {s.name}" for s in report.screws),
        *(f"C2 pedicle {c.side}" for c in report.c2),
    ]
    first = groups[0]
    measured = {m.name.value: (m.value, m.unit.value) for m in first.get_measurements()}
    assert measured["410668003"] == (report.screws[0].length_mm, "mm")
    assert measured["SN-PTA"] == (pytest.approx(report.screws[0].pta_deg), "deg")
    grades = {e.name.value: e.value.value for e in first.get_qualitative_evaluations()}
    assert grades == {"SN-GR": "SN-GR-A", "SN-BABU": "SN-BABU-0"}

"""write_outputs: every object written, valid, consistent, reproducible; real CT files as input."""

from __future__ import annotations

import dataclasses
import datetime
import socket
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_io import load_series
from dicom_io.ct_writer import CTSeriesSpec, write_ct_series
from dicom_io.derived import creation_time
from dicom_io.outputs import OutputOptions, write_outputs
from dicom_io.report import AnalysisReport, ReportFormatError
from dicom_io.sc import views
from dicom_io.seg.content import screw_mask
from dicom_io.seg.sop import SegmentationKind
from dicom_io.sr.read import measurement_groups
from dicom_io.uids import UIDSeedError, derived_uid
from tests.dicom_io import synthetic_result as syn


def _write(out: Path, **options: object) -> list[Path]:
    labels, parts = syn.label_maps()
    return write_outputs(
        syn.volume(),
        syn.report(),
        labels,
        parts,
        out,
        options=OutputOptions(**options),  # type: ignore[arg-type]
    )


def test_writes_seg_sr_and_captures_all_valid(tmp_path: Path) -> None:
    paths = _write(tmp_path / "out")
    names = [p.name for p in paths]
    assert names == [
        "seg.dcm",
        "sr.dcm",
        "sc_01_L4.dcm",
        "sc_02_overview.dcm",
        "sc_03_C2_left.dcm",
        "sc_04_C2_right.dcm",
    ]
    datasets = [pydicom.dcmread(p) for p in paths]
    for path in paths:
        assert syn.dciodvfy_errors(path) == [], path.name
    # same patient and study as the source, three new series with distinct numbers
    assert {ds.StudyInstanceUID for ds in datasets} == {syn.STUDY_UID}
    assert {ds.PatientID for ds in datasets} == {syn.header().PatientID}
    series = {ds.Modality: (ds.SeriesInstanceUID, int(ds.SeriesNumber)) for ds in datasets}
    assert series.keys() == {"SEG", "SR", "OT"}
    assert len({uid for uid, _ in series.values()}) == 3
    assert sorted(n for _, n in series.values()) == [7701, 7702, 7703]
    assert syn.SERIES_UID not in {uid for uid, _ in series.values()}
    # all captures in one series, numbered 1..4
    captures = [ds for ds in datasets if ds.Modality == "OT"]
    assert [int(ds.InstanceNumber) for ds in captures] == [1, 2, 3, 4]
    # the SR references the SEG that was written with it
    evidence = {
        item.ReferencedSOPInstanceUID
        for study in datasets[1].CurrentRequestedProcedureEvidenceSequence
        for s in study.ReferencedSeriesSequence
        for item in s.ReferencedSOPSequence
    }
    assert datasets[0].SOPInstanceUID in evidence


def test_running_twice_gives_identical_files_and_a_new_version_or_engine_new_uids(
    tmp_path: Path,
) -> None:
    first = _write(tmp_path / "a")
    second = _write(tmp_path / "b")
    for a, b in zip(first, second, strict=True):
        assert a.read_bytes() == b.read_bytes(), a.name
    report = dataclasses.replace(syn.report(), version="0.2.0")
    labels, parts = syn.label_maps()
    fast = OutputOptions(sc=False)  # the SEG and SR UIDs are enough here
    third = write_outputs(syn.volume(), report, labels, parts, tmp_path / "c", options=fast)
    uids = {pydicom.dcmread(p).SOPInstanceUID for p in first}
    assert uids.isdisjoint({pydicom.dcmread(p).SOPInstanceUID for p in third})
    learned = dataclasses.replace(syn.report(), engine="learned")
    fourth = write_outputs(syn.volume(), learned, labels, parts, tmp_path / "d", options=fast)
    assert uids.isdisjoint({pydicom.dcmread(p).SOPInstanceUID for p in fourth})


def test_options_select_objects_and_labelmap(tmp_path: Path) -> None:
    paths = _write(
        tmp_path / "out", sc=False, sr=False, segmentation_type=SegmentationKind.LABELMAP
    )
    assert [p.name for p in paths] == ["seg.dcm"]
    ds = pydicom.dcmread(paths[0])
    assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    assert ds.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.5"  # RLE Lossless
    plain = _write(
        tmp_path / "plain",
        sc=False,
        sr=False,
        segmentation_type=SegmentationKind.LABELMAP,
        compress_labelmap=False,
    )
    ds_plain = pydicom.dcmread(plain[0])
    assert ds_plain.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.1"
    np.testing.assert_array_equal(ds.pixel_array, ds_plain.pixel_array)
    assert paths[0].stat().st_size < plain[0].stat().st_size


def test_nothing_found_writes_nothing(tmp_path: Path) -> None:
    report = AnalysisReport(engine="geometric", version="0.1.0")
    empty = np.zeros(syn.SHAPE, dtype=np.uint8)
    assert write_outputs(syn.volume(), report, empty, None, tmp_path / "out") == []


def test_result_json_must_be_lps() -> None:
    bad = {**syn.result_json(), "frame": "RAS"}
    with pytest.raises(ReportFormatError, match="LPS"):
        AnalysisReport.from_json(bad)


def _spec() -> CTSeriesSpec:
    return CTSeriesSpec(
        patient_name="Disk^Test",
        patient_id="SN-DISK",
        patient_birth_date="19600101",
        patient_sex="M",
        study_instance_uid=syn.STUDY_UID,
        series_instance_uid=syn.SERIES_UID,
        frame_of_reference_uid=syn.FOR_UID,
        study_date="20240102",
        study_time="101010",
        accession_number="ACC1",
        study_id="1",
        series_number=3,
        series_description="spine CT",
        body_part_examined="SPINE",
    )


def test_outputs_from_a_real_ct_series_on_disk(tmp_path: Path) -> None:
    """CT files written by ct_writer, loaded by load_series: SEG frames land on the right slices."""
    write_ct_series(syn.volume().hu, syn.affine(), tmp_path / "ct", _spec())
    volume = load_series(tmp_path / "ct")
    labels, parts = syn.label_maps()
    paths = write_outputs(volume, syn.report(), labels, parts, tmp_path / "out")
    seg = hd.seg.segread(paths[0])
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}
    ct = {pydicom.dcmread(p).SOPInstanceUID: p for p in sorted((tmp_path / "ct").iterdir())}
    uids = [s.sop_instance_uid for s in volume.sources]
    assert set(uids) == set(ct)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=[numbers["L4"], numbers["Screw L4 left"]]
    )
    np.testing.assert_array_equal(pixels[..., 0] > 0, labels == 23)
    screw = syn.report().screws[0]
    np.testing.assert_array_equal(
        pixels[..., 1] > 0, screw_mask(screw, volume.shape, volume.affine)
    )
    assert pydicom.dcmread(paths[0]).PatientName == "Disk^Test"
    groups = measurement_groups(pydicom.dcmread(paths[1]))
    assert [g.tracking_id for g in groups][:2] == ["Screw L4 left", "Screw L4 right"]


def test_outputs_from_an_enhanced_ct(tmp_path: Path) -> None:
    """One multi-frame Enhanced CT as the source: every object is valid and references it."""
    write_ct_series(syn.volume().hu, syn.affine(), tmp_path / "ct", _spec(), enhanced=True)
    volume = load_series(tmp_path / "ct")
    enhanced_uid = pydicom.dcmread(tmp_path / "ct" / "ECT.dcm").SOPInstanceUID
    labels, parts = syn.label_maps()
    paths = write_outputs(volume, syn.report(), labels, parts, tmp_path / "out")
    for path in paths:
        assert syn.dciodvfy_errors(path) == [], path.name
    seg = pydicom.dcmread(paths[0])
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == {enhanced_uid}
    back = hd.seg.segread(paths[0])
    numbers = {str(s.SegmentLabel): int(s.SegmentNumber) for s in back.SegmentSequence}
    got = back.get_volume(segment_numbers=[numbers["Screw L4 left"]], combine_segments=True)
    expected = screw_mask(syn.report().screws[0], volume.shape, volume.affine)
    assert int((got.array > 0).sum()) == int(expected.sum())


def test_analyze_dicom_flag_refuses_nifti_input(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from node.cli import build_parser

    nifti = tmp_path / "ct.nii.gz"
    nifti.write_bytes(b"")
    args = build_parser().parse_args(
        ["analyze", str(nifti), "--out", str(tmp_path / "o"), "--dicom"]
    )
    assert args.dicom and not args.labelmap
    assert args._run(args) == 2
    assert "--dicom needs a DICOM input" in capsys.readouterr().err


def test_patient_name_in_utf8_is_kept_in_every_object(tmp_path: Path) -> None:
    header = syn.header()
    header.SpecificCharacterSet = "ISO_IR 192"
    header.PatientName = "Müller^Jörg=山田^太郎"
    volume = dataclasses.replace(syn.volume(), header=header)
    labels, parts = syn.label_maps()
    for path in write_outputs(volume, syn.report(), labels, parts, tmp_path / "out"):
        ds = pydicom.dcmread(path)
        assert ds.SpecificCharacterSet == "ISO_IR 192", path.name
        assert str(ds.PatientName) == "Müller^Jörg=山田^太郎", path.name
        assert syn.dciodvfy_errors(path) == [], path.name


def test_a_real_orthanc_stores_every_object(tmp_path: Path) -> None:
    """Orthanc (Debian package) on loopback accepts SEG, SR and captures over C-STORE."""
    from pynetdicom import AE

    from tests.node.orthanc import Orthanc, orthanc_available

    if not orthanc_available():
        pytest.skip("Orthanc (Debian package orthanc) is not installed")
    paths = _write(tmp_path / "out")
    datasets = [pydicom.dcmread(p) for p in paths]
    ports = []
    for _ in range(2):
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            ports.append(sock.getsockname()[1])
    orthanc = Orthanc(tmp_path / "orthanc", ports[0], ports[1], {})
    try:
        ae = AE(ae_title="SPINENODE")
        for sop_class in {str(ds.SOPClassUID) for ds in datasets}:
            ae.add_requested_context(sop_class, "1.2.840.10008.1.2.1")
        assoc = ae.associate("127.0.0.1", ports[0], ae_title="ORTHANC")
        assert assoc.is_established
        try:
            statuses = [int(assoc.send_c_store(ds).Status) for ds in datasets]
        finally:
            assoc.release()
        assert statuses == [0] * len(datasets)
        series = orthanc.get("/series?expand")
        modalities = sorted(str(s["MainDicomTags"]["Modality"]) for s in series)
        assert modalities == ["OT", "SEG", "SR"]
        assert orthanc.get("/statistics")["CountInstances"] == len(datasets)
    finally:
        orthanc.stop()


def test_odd_geometry_still_gives_valid_objects(tmp_path: Path) -> None:
    """A screw outside the CT, a screw along the slice axis, a C2 axis along patient left."""
    result = syn.result_json()
    outside = {**result["screws"][0], "level": "L5", "entry_mm": [500, 500, 500]}
    outside["tip_mm"] = [520, 500, 500]
    entry = result["screws"][0]["entry_mm"]
    vertical = {**result["screws"][0], "level": "L3", "tip_mm": [*entry[:2], entry[2] + 20]}
    result["screws"] += [outside, vertical]
    result["c2"][0]["axis_mm"] = [1.0, 0.0, 0.0]
    report = AnalysisReport.from_json(result)
    labels, parts = syn.label_maps()
    paths = write_outputs(syn.volume(), report, labels, parts, tmp_path / "out")
    for path in paths:
        assert syn.dciodvfy_errors(path) == [], path.name
    seg = pydicom.dcmread(paths[0])
    names = [str(s.SegmentLabel) for s in seg.SegmentSequence]
    assert "Screw L3 left" in names
    assert "Screw L5 left" not in names  # nothing of it on the CT grid
    groups = measurement_groups(pydicom.dcmread(paths[1]))
    assert "Screw L5 left" in [g.tracking_id for g in groups]  # still reported
    for finding in report.c2:
        for plane in views.c2_planes(finding):
            basis = np.array([plane.u, plane.v, finding.axis_mm])
            np.testing.assert_allclose(basis @ basis.T, np.eye(3), atol=1e-9)


def test_creation_time_comes_from_the_source_or_the_option() -> None:
    volume = syn.volume()
    assert creation_time(volume, None) == datetime.datetime(2024, 1, 2, 10, 15, 0)  # series
    header = syn.header()
    del header.SeriesDate
    header.StudyTime = "0930"  # short TM
    assert creation_time(dataclasses.replace(volume, header=header), None) == datetime.datetime(
        2024, 1, 2, 9, 30
    )
    bare = pydicom.Dataset()
    assert creation_time(dataclasses.replace(volume, header=bare), None) == datetime.datetime(
        2000, 1, 1
    )
    chosen = datetime.datetime(2025, 5, 6, 7, 8, 9, 123)
    assert creation_time(volume, chosen) == chosen.replace(microsecond=0)


def test_uids_need_a_series_and_a_version() -> None:
    assert derived_uid("1.2.3", "0.1/geometric", "seg.series").startswith("2.25.")
    assert derived_uid("1.2.3", "0.1/geometric", "a") != derived_uid("1.2.3", "0.1/geometric", "b")
    assert len(derived_uid("1.2.3", "0.1/geometric", "a")) <= 64
    with pytest.raises(UIDSeedError, match="source series UID is empty"):
        derived_uid("", "0.1", "seg.series")


def test_analysis_warnings_reach_the_report_and_the_overview(tmp_path: Path) -> None:
    warning = "transitional anatomy (a sacralised L5): levels counted from the sacrum, verify"
    report = dataclasses.replace(syn.report(), warnings=(warning,))
    labels, parts = syn.label_maps()
    paths = write_outputs(syn.volume(), report, labels, parts, tmp_path / "out")
    for path in paths:
        assert syn.dciodvfy_errors(path) == [], path.name
    sr = pydicom.dcmread(tmp_path / "out" / "sr.dcm")
    container = next(
        item
        for item in sr.ContentSequence
        if item.ValueType == "CONTAINER" and item.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    )
    assert [item.TextValue for item in container.ContentSequence] == [warning]
    assert len(measurement_groups(sr)) == 4  # the groups are unaffected
    parsed = hd.sr.MeasurementReport.from_sequence([sr])
    assert len(parsed.get_image_measurement_groups()) == 4
    without = views.overview_canvas(syn.volume(), views.numbered(report)).render()
    with_warning = pydicom.dcmread(tmp_path / "out" / "sc_02_overview.dcm").pixel_array
    assert with_warning.shape[0] > without.shape[0]  # the warning lines are burnt in

"""Our SEG has the structure of dcmqi's reference SEG (real data, skipped without)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from scipy import ndimage

from dicom_io.seg.sop import SegmentationKind
from tests.dicom_io import synthetic_result as syn
from tests.dicom_io.test_seg import _write


def test_seg_structure_matches_dcmqi_reference(shared_data: Path, tmp_path: Path) -> None:
    reference = pydicom.dcmread(shared_data / "reference-dicom/dcmqi/segmentations/liver.dcm")
    ours = pydicom.dcmread(_write(tmp_path, SegmentationKind.BINARY))
    assert ours.SOPClassUID == reference.SOPClassUID
    assert ours.SegmentationType == reference.SegmentationType == "BINARY"
    assert (ours.BitsAllocated, ours.BitsStored) == (reference.BitsAllocated, reference.BitsStored)
    # same functional groups per frame, same dimension organisation
    ref_frame = {e.keyword for e in reference.PerFrameFunctionalGroupsSequence[0]}
    our_frame = {e.keyword for e in ours.PerFrameFunctionalGroupsSequence[0]}
    assert ref_frame == our_frame
    pointers = [
        [int(d.DimensionIndexPointer) for d in ds.DimensionIndexSequence]
        for ds in (reference, ours)
    ]
    assert pointers[0] == pointers[1]
    # every attribute of a reference segment description is in ours (we add tracking, algorithm)
    ref_segment = {e.keyword for e in reference.SegmentSequence[0]}
    our_segment = {e.keyword for e in ours.SegmentSequence[0]}
    assert ref_segment <= our_segment
    missing = {e.keyword for e in reference} - {e.keyword for e in ours}
    assert missing <= {
        "ClinicalTrialCoordinatingCenterName",
        "ClinicalTrialSeriesID",
        "ClinicalTrialTimePointID",
        "PatientAge",
    }


def test_reference_seg_reads_back_with_the_same_reader(shared_data: Path) -> None:
    seg = hd.seg.segread(shared_data / "reference-dicom/dcmqi/segmentations/liver.dcm")
    sources = [
        pydicom.dcmread(p, stop_before_pixels=True)
        for p in sorted(
            (shared_data / "reference-dicom/dcmqi/segmentations/ct-3slice").glob("*.dcm")
        )
    ]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[s.SOPInstanceUID for s in sources if "SOPInstanceUID" in s],
        segment_numbers=[1],
        ignore_spatial_locations=True,
        assert_missing_frames_are_empty=True,
    )
    assert pixels.shape[-1] == 1
    assert np.count_nonzero(pixels) > 0


@pytest.mark.realdata
def test_seg_on_a_real_ct_series_with_totalsegmentator_labels(
    shared_data: Path, tmp_path: Path
) -> None:
    """Real JPEG 2000 CT (UIDs repaired by the loader) + TotalSegmentator T11/T12 labels."""
    from dicom_io import load_series
    from dicom_io.outputs import write_outputs
    from dicom_io.policy import LoadPolicy
    from dicom_io.report import AnalysisReport
    from inference.nifti import read_nifti

    volume = load_series(
        shared_data / "real-dicom/totalseg-t11-t12", policy=LoadPolicy(repair_uids=True)
    )
    labels, affine = read_nifti(shared_data / "real-dicom/totalseg-t11-t12-labels.nii.gz")
    # nearest-neighbour onto the CT grid through both affines (index → LPS mm)
    mapping = np.linalg.inv(affine) @ volume.affine
    values = ndimage.affine_transform(
        np.asarray(labels, dtype=np.int16),
        mapping[:3, :3],
        offset=mapping[:3, 3],
        output_shape=volume.shape,
        order=0,
    )
    verse = np.zeros(volume.shape, dtype=np.uint8)
    verse[values == 33] = 18  # TotalSegmentator v2 T11 → VerSe T11
    verse[values == 32] = 19  # T12
    assert (verse == 18).any() and (verse == 19).any()
    report = AnalysisReport(engine="geometric", version="0.1.0")
    (path,) = write_outputs(volume, report, verse, None, tmp_path / "out")
    assert syn.dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert [str(s.SegmentLabel) for s in seg.SegmentSequence] == ["T11", "T12"]
    assert seg.SegmentSequence[1].SegmentedPropertyTypeCodeSequence[0].CodeValue == "23215003"
    uids = [s.sop_instance_uid for s in volume.sources]
    pixels = seg.get_pixels_by_source_instance(source_sop_instance_uids=uids, segment_numbers=[2])
    np.testing.assert_array_equal(pixels[..., 0] > 0, verse == 19)


@pytest.mark.realdata
def test_outputs_on_a_resampled_real_series(shared_data: Path, tmp_path: Path) -> None:
    """Real GE head CT with gantry tilt and gaps: the loader resamples (28 files → more slices);
    the SEG places its frames by the affine, and the source's incomplete de-identification
    attributes are completed so that every object validates."""
    from dicom_io import load_series
    from dicom_io.derived import UNKNOWN_DEIDENTIFICATION
    from dicom_io.outputs import write_outputs
    from dicom_io.report import AnalysisReport

    volume = load_series(shared_data / "real-dicom/ge-head-gantry-tilt")
    assert len(volume.sources) != volume.shape[0]
    labels = np.zeros(volume.shape, dtype=np.uint8)
    labels[2:6, 200:300, 200:300] = 2
    entry = (volume.affine @ np.array([4.0, 290.0, 240.0, 1.0]))[:3]
    tip = (volume.affine @ np.array([4.0, 210.0, 250.0, 1.0]))[:3]
    result = syn.result_json()
    screw = {**result["screws"][0], "level": "C2", "entry_mm": list(entry), "tip_mm": list(tip)}
    report = AnalysisReport.from_json({**result, "screws": [screw], "c2": []})
    paths = write_outputs(volume, report, labels, None, tmp_path / "out")
    assert [p.name for p in paths] == ["seg.dcm", "sr.dcm", "sc_01_C2.dcm", "sc_02_overview.dcm"]
    for path in paths:
        assert syn.dciodvfy_errors(path) == [], path.name
        ds = pydicom.dcmread(path)
        if ds.get("PatientIdentityRemoved") == "YES":
            assert ds.DeidentificationMethod == UNKNOWN_DEIDENTIFICATION
    seg = hd.seg.segread(paths[0])
    got = seg.get_volume(segment_numbers=[1], combine_segments=True)
    assert int((got.array > 0).sum()) == int(labels.sum() // 2)


def test_label_map_reader_on_the_dcmqi_seg(shared_data: Path) -> None:
    """dcmqi's liver SEG lies on its real CT's frame of reference but holds no vertebra."""
    from dicom_io import load_series
    from dicom_io.seg.read import SegmentationMismatchError, vertebra_id, vertebra_label_map

    folder = shared_data / "reference-dicom/dcmqi/segmentations"
    volume = load_series(folder / "ct-3slice")
    seg = pydicom.dcmread(folder / "liver.dcm")
    assert [vertebra_id(item) for item in seg.SegmentSequence] == [None]
    with pytest.raises(SegmentationMismatchError, match="no vertebra segment"):
        vertebra_label_map(folder / "liver.dcm", volume)

"""Our SEG has the structure of dcmqi's reference SEG (real data, skipped without)."""

from __future__ import annotations

from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom

from dicom_io.seg.sop import SegmentationKind
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

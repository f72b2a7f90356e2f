"""The spinenode DICOM-SEG: validity, read-back of every mask, codes, determinism."""

from __future__ import annotations

import dataclasses
import datetime
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from dicom_io.derived import DerivedSeries, source_datasets
from dicom_io.seg.content import screw_mask
from dicom_io.seg.read import SegmentationMismatchError, vertebra_label_map
from dicom_io.seg.sop import (
    EmptySegmentationError,
    Equipment,
    SegmentationKind,
    build_segmentation,
)
from tests.dicom_io import synthetic_result as syn

EQUIPMENT = Equipment("spinenode", "spinenode", "0.1.0", "0")
WHEN = datetime.datetime(2024, 1, 2, 11, 0, 0)


def _write(tmp_path: Path, kind: SegmentationKind, name: str = "seg.dcm") -> Path:
    volume = syn.volume()
    series = DerivedSeries("1.2.826.0.1.3680043.8.498.7001.90", 7701, "Spine segmentation", WHEN)
    seg = build_segmentation(
        volume,
        source_datasets(volume),
        syn.report(),
        syn.label_maps(),
        series=series,
        equipment=EQUIPMENT,
        kind=kind,
    )
    path = tmp_path / name
    seg.save_as(path, enforce_file_format=True)
    return path


def _expected_masks() -> dict[str, np.ndarray]:
    labels, parts = syn.label_maps()
    volume, report = syn.volume(), syn.report()
    masks = {"L4": labels == 23, "L5": labels == 24, "C2": labels == 2}
    masks["C2 pediculoisthmic left"] = parts == 5
    masks["C2 pediculoisthmic right"] = parts == 6
    for screw in report.screws:
        masks[f"Screw {screw.name}"] = screw_mask(screw, volume.shape, volume.affine)
    return masks


def _segment_numbers(seg: hd.seg.Segmentation) -> dict[str, int]:
    return {str(s.SegmentLabel): int(s.SegmentNumber) for s in seg.SegmentSequence}


def test_binary_seg_is_valid_and_masks_read_back(tmp_path: Path) -> None:
    path = _write(tmp_path, SegmentationKind.BINARY)
    assert syn.dciodvfy_errors(path) == []
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.4"
    assert seg.SegmentationType == "BINARY"
    sources = [s.sop_instance_uid for s in syn.volume().sources]
    # every source slice is referenced, even those without a segment
    referenced = {
        item.ReferencedSOPInstanceUID
        for series in seg.ReferencedSeriesSequence
        for item in series.ReferencedInstanceSequence
    }
    assert referenced == set(sources)
    numbers = _segment_numbers(seg)
    expected = _expected_masks()
    assert sorted(numbers) == sorted(expected)
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=sources,
        segment_numbers=[numbers[name] for name in expected],
        ignore_spatial_locations=True,
    )
    for k, (name, mask) in enumerate(expected.items()):
        assert mask.any(), name
        np.testing.assert_array_equal(pixels[..., k] > 0, mask, err_msg=name)
    # empty frames are omitted: fewer frames than slices × segments
    assert int(seg.NumberOfFrames) == sum(int(m.any(axis=(1, 2)).sum()) for m in expected.values())


def test_segments_carry_snomed_codes_laterality_and_algorithm(tmp_path: Path) -> None:
    seg = pydicom.dcmread(_write(tmp_path, SegmentationKind.BINARY))
    by_label = {str(s.SegmentLabel): s for s in seg.SegmentSequence}
    l4 = by_label["L4"]
    assert l4.SegmentedPropertyTypeCodeSequence[0].CodeValue == "11994002"  # L4 vertebra
    assert l4.SegmentedPropertyCategoryCodeSequence[0].CodeValue == "91723000"
    assert by_label["C2"].SegmentedPropertyTypeCodeSequence[0].CodeValue == "39976000"
    screw = by_label["Screw L4 left"]
    prop = screw.SegmentedPropertyTypeCodeSequence[0]
    assert prop.CodeValue == "68183006"  # bone screw
    assert prop.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "7771000"  # left
    assert screw.AnatomicRegionSequence[0].CodeValue == "11994002"
    assert screw.SegmentAlgorithmType == "AUTOMATIC"
    algo = screw.SegmentationAlgorithmIdentificationSequence[0]
    assert algo.AlgorithmName == "spinenode geometric"
    assert algo.AlgorithmVersion == "0.1.0"
    right = by_label["C2 pediculoisthmic right"].SegmentedPropertyTypeCodeSequence[0]
    assert right.CodeValue == "78972004"
    assert right.SegmentedPropertyTypeModifierCodeSequence[0].CodeValue == "24028007"


def test_seg_copies_patient_study_and_frame_of_reference(tmp_path: Path) -> None:
    seg = pydicom.dcmread(_write(tmp_path, SegmentationKind.BINARY))
    header = syn.header()
    for kw in (
        "PatientName",
        "PatientID",
        "PatientBirthDate",
        "StudyInstanceUID",
        "AccessionNumber",
    ):
        assert seg[kw].value == header[kw].value, kw
    assert seg.FrameOfReferenceUID == syn.FOR_UID
    assert seg.SeriesInstanceUID != syn.SERIES_UID
    assert seg.SeriesDescription == "Spine segmentation"


def test_labelmap_seg_paints_screws_over_vertebrae(tmp_path: Path) -> None:
    path = _write(tmp_path, SegmentationKind.LABELMAP)
    seg = hd.seg.segread(path)
    assert seg.SOPClassUID == "1.2.840.10008.5.1.4.1.1.66.7"
    numbers = _segment_numbers(seg)
    expected = np.zeros(syn.SHAPE, dtype=np.int64)
    for name, mask in _expected_masks().items():  # in SEG order: screws last
        expected[mask] = numbers[name]
    pixels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[s.sop_instance_uid for s in syn.volume().sources],
        ignore_spatial_locations=True,
        combine_segments=True,
    )
    np.testing.assert_array_equal(pixels, expected)


def test_seg_bytes_and_uids_are_deterministic(tmp_path: Path) -> None:
    first = _write(tmp_path, SegmentationKind.BINARY, "a.dcm")
    second = _write(tmp_path, SegmentationKind.BINARY, "b.dcm")
    assert first.read_bytes() == second.read_bytes()
    ds = pydicom.dcmread(first)
    assert ds.InstanceCreationDate == "20240102"
    assert ds.ContentTime == "110000"


def test_screw_mask_is_a_cylinder_between_entry_and_tip() -> None:
    volume = syn.volume()
    screw = syn.report().screws[0]
    mask = screw_mask(screw, volume.shape, volume.affine)
    inverse = np.linalg.inv(volume.affine)
    entry, tip = np.array(screw.entry_mm), np.array(screw.tip_mm)
    for t in np.linspace(0.05, 0.95, 7):
        index = np.rint((inverse @ np.array([*(entry + t * (tip - entry)), 1.0]))[:3]).astype(int)
        assert mask[tuple(index)]
    # volume ≈ π r² L on a 0.8 × 0.8 × 1 mm grid
    expected = np.pi * (screw.diameter_mm / 2) ** 2 * np.linalg.norm(tip - entry) / 0.64
    assert mask.sum() == pytest.approx(expected, rel=0.25)
    assert not mask[:, :, :30].any()  # a left screw stays on the left (high columns)


def test_nothing_to_segment_is_an_error() -> None:
    volume = syn.volume()
    report = syn.report()
    empty = np.zeros(syn.SHAPE, dtype=np.uint8)
    bare = type(report)(engine=report.engine, version=report.version)
    series = DerivedSeries("1.2.3.4", 1, "x", WHEN)
    with pytest.raises(EmptySegmentationError, match="nothing to segment"):
        build_segmentation(
            volume, source_datasets(volume), bare, (empty, None), series=series, equipment=EQUIPMENT
        )


def test_seg_for_a_resampled_volume_places_frames_by_the_affine(tmp_path: Path) -> None:
    """Sources are not one per slice (the loader resampled): frames still land on the CT grid."""
    aligned = syn.volume()
    half = tuple(aligned.sources[::2])
    volume = dataclasses.replace(aligned, sources=half)
    sources = source_datasets(volume)
    assert [s.SOPInstanceUID for s in sources] == [s.sop_instance_uid for s in half]
    series = DerivedSeries("1.2.826.0.1.3680043.8.498.7001.90", 7701, "Spine segmentation", WHEN)
    seg = build_segmentation(
        volume, sources, syn.report(), syn.label_maps(), series=series, equipment=EQUIPMENT
    )
    path = tmp_path / "seg.dcm"
    seg.save_as(path, enforce_file_format=True)
    assert syn.dciodvfy_errors(path) == []
    back = hd.seg.segread(path)
    numbers = _segment_numbers(back)
    got = back.get_volume(segment_numbers=[numbers["L5"]], combine_segments=True)
    expected = np.zeros(syn.SHAPE, dtype=bool)
    expected[syn.label_maps()[0] == 24] = True
    # map every voxel of the returned volume back onto our grid through both affines
    index = np.argwhere(np.ones(got.array.shape[:3], dtype=bool))
    mapping = np.linalg.inv(aligned.affine) @ np.asarray(got.affine)
    ours = np.rint(index @ mapping[:3, :3].T + mapping[:3, 3]).astype(int)
    inside = np.all((ours >= 0) & (ours < np.array(syn.SHAPE)), axis=1)
    values = got.array[tuple(index.T)] > 0
    assert not values[~inside].any()
    np.testing.assert_array_equal(values[inside], expected[tuple(ours[inside].T)])
    assert values.sum() == expected.sum()


@pytest.mark.parametrize("kind", list(SegmentationKind))
def test_vertebra_label_map_reads_our_seg_back(tmp_path: Path, kind: SegmentationKind) -> None:
    path = _write(tmp_path, kind)
    labels, _ = syn.label_maps()
    got = vertebra_label_map(path, syn.volume())
    if kind is SegmentationKind.BINARY:
        np.testing.assert_array_equal(got, labels)
    else:  # in a label map the screws and C2 parts were painted over their vertebra
        masks = _expected_masks()
        over = np.zeros(syn.SHAPE, dtype=bool)
        for name in ("Screw L4 left", "Screw L4 right", "C2 pediculoisthmic left"):
            over |= masks[name]
        over |= masks["C2 pediculoisthmic right"]
        np.testing.assert_array_equal(got[~over], labels[~over])
        assert not got[over].any()


def test_vertebra_label_map_on_a_coarser_seg_grid(tmp_path: Path) -> None:
    """A SEG on another grid of the same frame of reference is resampled onto the CT."""
    volume = syn.volume()
    coarse_affine = volume.affine.copy()
    coarse_affine[:3, :3] *= 2.0  # every second voxel along each axis
    coarse = dataclasses.replace(
        volume, hu=volume.hu[::2, ::2, ::2], affine=coarse_affine, sources=volume.sources[::2]
    )
    labels, _ = syn.label_maps()
    series = DerivedSeries("1.2.826.0.1.3680043.8.498.7001.90", 7701, "Spine segmentation", WHEN)
    bare = type(syn.report())(engine="geometric", version="0.1.0")
    seg = build_segmentation(
        coarse,
        source_datasets(coarse),
        bare,
        (labels[::2, ::2, ::2], None),
        series=series,
        equipment=EQUIPMENT,
    )
    got = vertebra_label_map(seg, volume)
    agree = np.mean(got[labels > 0] == labels[labels > 0])
    assert agree > 0.85  # nearest neighbour from a 2× coarser grid
    assert set(np.unique(got)) == {0, 2, 23, 24}


def test_vertebra_label_map_refuses_another_frame_of_reference(tmp_path: Path) -> None:
    path = _write(tmp_path, SegmentationKind.BINARY)
    other = dataclasses.replace(syn.volume(), frame_of_reference_uid="1.2.3.4.5")
    with pytest.raises(SegmentationMismatchError, match="frame of reference"):
        vertebra_label_map(path, other)

"""Level naming: counted from the sacrum, checked against the last rib-bearing vertebra; a sixth
lumbar or a sacralised L5 is reported, never silently mislabelled."""

from __future__ import annotations

import numpy as np
import pytest

from inference.errors import NotApplicableError
from inference.segment.instances import Instances
from inference.segment.labelling import label_levels, merge_sacrum

AFFINE = np.diag([2.0, 2.0, 2.0, 1.0])  # index (k, j, i) -> (x, y, z) = 2 mm steps
CRANIAL = np.array([0.0, 0.0, 1.0])


def _column(n_mobile: int, ribs: bool) -> Instances:
    """A thoracic rib-bearing vertebra (when ``ribs``), ``n_mobile`` lumbar ones and a sacrum,
    stacked along z on a 2 mm grid; index axis 0 is x, 1 y, 2 z."""
    n = n_mobile + 1 + int(ribs)
    labels = np.zeros((100, 30, 20 * n + 10), dtype=np.uint8)
    cents, widths = [], []
    for k in range(n):  # k = 0 is the most cranial
        z0 = 20 * (n - 1 - k) + 5
        labels[40:60, 10:20, z0 : z0 + 12] = k + 1
        width = 40.0
        if k == n - 1:  # sacrum: wide alae
            labels[25:75, 10:20, z0 : z0 + 12] = k + 1
            width = 100.0
        if ribs and k == 0:  # ribs fused to the vertebra in the mask, both sides
            labels[5:40, 14:16, z0 + 4 : z0 + 8] = k + 1
            labels[60:95, 14:16, z0 + 4 : z0 + 8] = k + 1
        cents.append([100.0, 30.0, 2.0 * (z0 + 6)])
        widths.append(width)
    return Instances(labels, np.array(cents), np.full(n, 12.0), np.array(widths))


def test_normal_column_is_counted_from_the_sacrum_and_confirmed_by_the_ribs() -> None:
    names = label_levels(_column(5, ribs=True), AFFINE, CRANIAL)
    assert names.levels == ("T12", "L1", "L2", "L3", "L4", "L5", "S1")
    assert min(names.confidence) > 0.95
    assert not any("transitional" in w for w in names.warnings)


def test_six_lumbar_vertebrae_are_reported_as_l6() -> None:
    names = label_levels(_column(6, ribs=True), AFFINE, CRANIAL)
    assert names.levels == ("T12", "L1", "L2", "L3", "L4", "L5", "L6", "S1")
    assert max(names.confidence) < 0.7
    assert any("sixth lumbar" in w for w in names.warnings)


def test_four_mobile_vertebrae_are_reported_as_a_sacralised_l5() -> None:
    names = label_levels(_column(4, ribs=True), AFFINE, CRANIAL)
    assert names.levels[-1] == "S1"
    assert max(names.confidence) < 0.7
    assert any("sacralised L5" in w for w in names.warnings)


def test_without_ribs_the_count_is_from_the_sacrum_with_a_warning() -> None:
    names = label_levels(_column(5, ribs=False), AFFINE, CRANIAL)
    assert names.levels == ("L1", "L2", "L3", "L4", "L5", "S1")
    assert any("sacrum only" in w and "sixth lumbar" in w for w in names.warnings)
    assert max(names.confidence) < 0.95


def test_six_rib_less_vertebrae_above_the_sacrum_warn_of_a_sixth_lumbar() -> None:
    # an L6 spine without ribs in view: counted from the sacrum the top lumbar vertebra is named
    # T12; it is whole in view and bears no ribs, so the warning must say it may be an L6
    names = label_levels(_column(6, ribs=False), AFFINE, CRANIAL)
    assert names.levels == ("T12", "L1", "L2", "L3", "L4", "L5", "S1")
    assert any("rib-less" in w and "sixth lumbar" in w for w in names.warnings)
    assert max(names.confidence) < 0.7


def test_a_top_vertebra_cut_by_the_field_of_view_gives_the_plain_warning() -> None:
    inst = _column(6, ribs=False)
    labels = inst.labels.copy()
    top = labels == 1
    labels[:, :, -1] = np.where(top.any(axis=2), 1, labels[:, :, -1])  # reaches the top face
    cut = Instances(labels, inst.centroids, inst.core_extent_mm, inst.width_mm)
    names = label_levels(cut, AFFINE, CRANIAL)
    assert not any("rib-less" in w for w in names.warnings)
    assert any("sacrum only" in w for w in names.warnings)


def test_too_short_a_column_is_not_applicable() -> None:
    inst = _column(5, ribs=False)
    short = Instances(inst.labels, inst.centroids[:2], inst.core_extent_mm[:2], inst.width_mm[:2])
    with pytest.raises(NotApplicableError):
        label_levels(short, AFFINE, CRANIAL)


def test_lower_sacral_segment_is_merged_into_s1() -> None:
    inst = _column(5, ribs=False)
    n = len(inst.centroids)
    labels = inst.labels.copy()
    labels[40:60, 10:20, 0:4] = n + 1  # an S2 segment below the wide S1
    split = Instances(
        labels,
        np.vstack([inst.centroids, [100.0, 30.0, 4.0]]),
        np.append(inst.core_extent_mm, 10.0),
        np.append(inst.width_mm, 40.0),
    )
    merged = merge_sacrum(split)
    assert len(merged.centroids) == n
    assert (merged.labels == n + 1).sum() == 0


def test_a_wide_l5_above_a_wider_sacrum_is_not_merged_into_it() -> None:
    inst = _column(5, ribs=False)
    widths = inst.width_mm.copy()
    widths[-2] = 1.4 * 40.0  # L5 with long transverse processes
    wide_l5 = Instances(inst.labels, inst.centroids, inst.core_extent_mm, widths)
    merged = merge_sacrum(wide_l5)
    assert len(merged.centroids) == len(inst.centroids)
    names = label_levels(merged, AFFINE, CRANIAL)
    assert names.levels == ("L1", "L2", "L3", "L4", "L5", "S1")

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from inference.segment.assign import geodesic_labels
from inference.segment.facets import facet_markers, gap_depth

# index (slice, row, col) -> LPS (x = col, y = row, z = slice): rows run posterior, slices cranial
AFF = np.array([[0, 0, 1, 0], [0, 1, 0, 0], [1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float64)
CRANIAL = np.array([0.0, 0.0, 1.0])
CENTS = np.array([[0.0, 0.0, 40.0], [0.0, 0.0, 10.0]])  # two bodies, cranial first
CENTRE = np.array([20.0, 30.0, 25.0])  # a left facet joint, 30 mm behind the bodies
NORMAL = np.array([-1.0, 1.0, 0.0]) / np.sqrt(2.0)  # SAP -> IAP: medial and posterior
SHAPE = (50, 50, 40)


def _joint() -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_], npt.NDArray[np.float64]]:
    """Two articular processes 7 mm thick meeting at a 1.6 mm gap (0 HU) between 1.2 mm
    cortices (1000 HU) around marrow (250 HU); returns (hu, bone mask bridging the gap,
    signed distance from the joint plane along NORMAL, mm, > 0 on the IAP side)."""
    zz, yy, xx = np.indices(SHAPE).astype(np.float64)
    rel = np.stack([xx, yy, zz], axis=-1) - CENTRE
    s = rel @ NORMAL
    along = rel @ np.cross(NORMAL, CRANIAL)
    inside = (np.abs(s) < 7.8) & (np.abs(along) < 8.0) & (np.abs(rel[..., 2]) < 10.0)
    hu = np.full(SHAPE, -100.0, dtype=np.float32)
    hu[inside] = 250.0
    wall = (np.abs(s) >= 6.6) | (np.abs(s) <= 2.0)
    hu[inside & wall] = 1000.0
    hu[inside & (np.abs(s) < 0.8)] = 0.0
    return hu, inside, s


def test_each_articular_process_is_seeded_on_its_own_side_of_the_joint() -> None:
    hu, bone, s = _joint()
    first = np.zeros(SHAPE, dtype=np.uint8)
    first[bone] = 2  # a first growth that gave the IAP's lower half to the vertebra below
    first[bone & (s > 0) & (np.indices(SHAPE)[0] > 25)] = 1
    out = facet_markers(bone, first, hu, gap_depth(hu), AFF, cents=CENTS, cranial=CRANIAL)
    iap = bone & (s > 1.0) & (s <= 3.0)
    sap = bone & (s < -1.0) & (s >= -3.0)
    assert np.mean(out[iap] == 1) > 0.8
    assert np.mean(out[sap] == 2) > 0.8
    assert not np.any(out[bone & (s > 0)] == 2)
    assert not np.any(out[bone & (s < 0)] == 1)


def test_no_markers_without_a_joint_gap_or_in_front_of_the_column() -> None:
    hu, bone, s = _joint()
    first = np.where(bone, np.where(s > 0, 1, 2), 0).astype(np.uint8)
    solid = np.where(bone, np.float32(1000.0), hu).astype(np.float32)  # fused: no gap
    assert not facet_markers(
        bone, first, solid, gap_depth(solid), AFF, cents=CENTS, cranial=CRANIAL
    ).any()
    ahead = CENTS + np.array([0.0, 40.0, 0.0])  # the bodies behind the joint: not a facet
    assert not facet_markers(
        bone, first, hu, gap_depth(hu), AFF, cents=ahead, cranial=CRANIAL
    ).any()


def test_the_iap_tip_on_the_lamina_below_stays_with_the_vertebra_above() -> None:
    hu, bone, s = _joint()
    zz = np.indices(SHAPE)[0]
    # the lamina below: a bar under both processes, touching the IAP's tip with no gap
    footprint: npt.NDArray[np.bool_] = np.any(bone, axis=0)
    lamina = (zz >= 12) & (zz < 16) & (np.abs(s) < 7.8) & footprint[None]
    bone = bone | lamina
    hu = np.where(lamina & (hu < 250.0), np.float32(400.0), hu).astype(np.float32)
    markers = np.zeros(SHAPE, dtype=np.uint8)
    markers[bone & (s > 1.0) & (zz >= 33)] = 1  # the upper arch reaches the IAP from above
    markers[lamina & (zz < 13)] = 2  # the vertebra below: its lamina
    spacing = np.ones(3)
    plain = geodesic_labels(bone, markers, spacing, hu)
    tip = bone & (s > 1.0) & (zz >= 18) & (zz < 22)  # 2 mm and more above the lamina
    assert np.mean(plain[tip] == 2) > 0.5  # without the joint's markers the tip goes below
    first = plain
    extra = facet_markers(bone, first, hu, gap_depth(hu), AFF, cents=CENTS, cranial=CRANIAL)
    markers[(extra > 0) & (markers == 0)] = extra[(extra > 0) & (markers == 0)]
    seeded = geodesic_labels(bone, markers, spacing, hu)
    assert np.mean(seeded[tip] == 1) > 0.9
    assert np.mean(seeded[bone & ~lamina & (s < -1.0)] == 2) > 0.9

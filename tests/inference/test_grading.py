"""GR grades from screws displaced by known distances; Babu grades from constructed joints."""

from __future__ import annotations

import numpy as np
import pytest

from inference.geometry import Frame, SignedDistance
from inference.grading import Screw, babu_grade, facet_joint, gertzbein_robbins, gr_grade_of
from inference.results import Side

# LPS: r = patient right = -x, a = anterior = -y, s = +z
FRAME = Frame(np.zeros(3), np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.array([0, 0, 1.0]))
STEP = 0.5


def _grid(n: int) -> np.ndarray:
    affine = np.eye(4) * STEP
    affine[3, 3] = 1.0
    affine[:3, 3] = -STEP * (n - 1) / 2
    return affine


def _points(affine: np.ndarray, shape: tuple[int, int, int]) -> np.ndarray:
    idx = np.indices(shape).reshape(3, -1).T.astype(float)
    return idx @ affine[:3, :3].T + affine[:3, 3]


def _bone_tube(radius: float) -> tuple[np.ndarray, np.ndarray]:
    """A bone rod of ``radius`` mm along a (LPS -y), 60 mm long, on a 0.5 mm grid."""
    n = 81
    affine = _grid(n)
    pts = _points(affine, (n, n, n))
    inside = (np.hypot(pts[:, 0], pts[:, 2]) <= radius) & (np.abs(pts[:, 1]) <= 18.0)
    return inside.reshape(n, n, n), affine


@pytest.mark.parametrize(
    ("breach", "grade"), [(0.0, "A"), (1.0, "B"), (3.0, "C"), (5.0, "D"), (7.0, "E")]
)
def test_gr_grade_and_distance_from_a_displaced_screw(breach: float, grade: str) -> None:
    mask, affine = _bone_tube(radius=8.0)
    phi = SignedDistance(mask, affine)
    # screw radius 3 along the rod, shifted laterally (left screw: lateral = +x in LPS)
    shift = 8.0 - 3.0 + breach + (0.25 if breach > 0 else -1.0)
    entry = np.array([shift, 17.0, 0.0])
    screw = Screw(entry, entry + np.array([0.0, -30.0, 0.0]), 6.0)
    gr = gertzbein_robbins(phi, screw, FRAME, Side.LEFT)
    assert gr.grade == grade
    assert gr.breach_mm == pytest.approx(breach, abs=0.35)
    assert gr.direction == (None if grade == "A" else "lateral")


def test_breach_direction_is_medial_for_a_right_screw_shifted_left() -> None:
    mask, affine = _bone_tube(radius=8.0)
    phi = SignedDistance(mask, affine)
    entry = np.array([8.0, 17.0, 0.0])  # +x = patient left = medial for a right screw
    gr = gertzbein_robbins(
        phi, Screw(entry, entry + np.array([0.0, -30.0, 0.0]), 6.0), FRAME, Side.RIGHT
    )
    assert gr.direction == "medial"
    assert gr.grade in {"B", "C"}


def test_gr_thresholds() -> None:
    assert [gr_grade_of(b) for b in (0.0, 1.99, 2.0, 3.99, 4.0, 5.99, 6.0)] == list("ABCCDDE")


def _joint_scene() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Lower vertebra: a body block in front and a facet block behind on the left; the upper
    vertebra's articular block sits 2 mm cranial to the facet block (the joint space)."""
    lower, (x, y, z), affine = _lower_vertebra()
    upper = (x >= 8) & (x <= 20) & (y > 0) & (y <= 15) & (z >= 7) & (z <= 15)
    return lower, upper.reshape(lower.shape), affine


def _lower_vertebra(
    n: int = 101,
) -> tuple[np.ndarray, tuple[np.ndarray, np.ndarray, np.ndarray], np.ndarray]:
    """A body block in front (LPS y ≤ 0) and a left facet block behind it (top face z = 5) on an
    n³ grid; also the LPS x, y, z of every voxel (flat) and the affine."""
    affine = _grid(n)
    pts = _points(affine, (n, n, n))
    x, y, z = pts[:, 0], pts[:, 1], pts[:, 2]
    body = (np.abs(x) <= 20) & (y >= -20) & (y <= 0) & (np.abs(z) <= 10)
    facet = (x >= 8) & (x <= 20) & (y > 0) & (y <= 15) & (z >= -5) & (z <= 5)
    return (body | facet).reshape((n, n, n)), (x, y, z), affine


@pytest.mark.parametrize(
    ("z", "x", "grade"),
    [(-3.5, 26.0, 0), (-3.0, 14.0, 0), (3.0, 17.0, 1), (4.8, 14.0, 2), (9.0, 14.0, 3)],
)
def test_babu_grades_from_a_constructed_joint(z: float, x: float, grade: int) -> None:
    lower, upper, affine = _joint_scene()
    # the lower vertebra's body wall is at local a = 0 (LPS y = 0); posterior = +y
    joint = facet_joint(
        lower, upper, affine, frame=FRAME, side=Side.LEFT, body_back_mm=0.0, gap=1.5
    )
    entry = np.array([x, 14.0, z])
    screw = Screw(entry, entry + np.array([0.0, -12.0, 0.0]), 2.0)
    assert babu_grade(joint, screw) == grade


def _oblique_block(normal: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Bone = the half-space behind the plane through the origin with outward ``normal``, in a
    ±25 mm cube (0.5 mm grid): a flat entry cortex the screw meets obliquely."""
    n = 101
    affine = _grid(n)
    pts = _points(affine, (n, n, n))
    return (pts @ normal <= 0.0).reshape(n, n, n), affine


def test_thread_outside_an_oblique_entry_cortex_is_not_a_breach() -> None:
    # entry surface facing posterolateral (lateral dominates, so the "mainly posterior normal"
    # exemption does not apply); the screw meets it 40° off its normal, fully inside afterwards
    normal = np.array([np.sin(np.radians(60.0)), np.cos(np.radians(60.0)), 0.0])
    mask, affine = _oblique_block(normal)
    phi = SignedDistance(mask, affine)
    angle = np.radians(-110.0)  # -normal is at -150° in the x-y plane; 40° towards anterior
    direction = np.array([np.cos(angle), np.sin(angle), 0.0])
    screw = Screw(np.zeros(3), 20.0 * direction, 7.5)
    # 2 mm past the entry the far side of the thread is still outside, beyond the tolerance
    assert phi(screw.surface_points()).max() > 0.6
    gr = gertzbein_robbins(phi, screw, FRAME, Side.LEFT)
    assert (gr.grade, gr.breach_mm, gr.direction) == ("A", 0.0, None)


def test_a_screw_beside_the_bone_still_breaches_near_its_entry() -> None:
    # the same block, the screw 2 mm outside it and parallel to its surface: never enters
    normal = np.array([1.0, 0.0, 0.0])
    mask, affine = _oblique_block(normal)
    phi = SignedDistance(mask, affine)
    entry = np.array([2.0 + 3.0, 10.0, 0.0])
    screw = Screw(entry, entry + np.array([0.0, -20.0, 0.0]), 6.0)
    gr = gertzbein_robbins(phi, screw, FRAME, Side.LEFT)
    assert gr.grade == "E"
    assert gr.direction == "lateral"


def test_joint_space_is_the_gap_between_facing_surfaces_not_any_near_miss() -> None:
    # lower: the body and a facet block (top face z = 5); upper: a 2 mm plate standing on it
    # 1 mm above (a T-junction). Under the plate the gap is sandwiched between the two bones;
    # beside the plate's edge the nearest bones lie at right angles: close, but no joint.
    lower, (x, y, z), affine = _lower_vertebra()
    plate = (x >= 13) & (x <= 15) & (y > 0) & (y <= 15) & (z >= 6) & (z <= 15)
    joint = facet_joint(
        lower,
        plate.reshape(lower.shape),
        affine,
        frame=FRAME,
        side=Side.LEFT,
        body_back_mm=0.0,
        gap=1.5,
    )
    assert joint.joint(np.array([[14.0, 7.0, 5.5]]), order=0)[0] == 1.0  # under the plate
    assert joint.joint(np.array([[16.0, 7.0, 5.5]]), order=0)[0] == 0.0  # beside its edge


def test_a_smaller_tolerance_reports_a_breach_within_the_default_one() -> None:
    # thread about 0.1 mm beyond the rod's wall (on this grid's φ): within the 0.25 mm tolerance
    # of the reported grade, a breach for a planner that keeps the tolerance as a margin
    mask, affine = _bone_tube(radius=8.0)
    phi = SignedDistance(mask, affine)
    entry = np.array([8.0 - 3.0 - 0.1, 17.0, 0.0])
    screw = Screw(entry, entry + np.array([0.0, -30.0, 0.0]), 6.0)
    assert gertzbein_robbins(phi, screw, FRAME, Side.LEFT).grade == "A"
    strict = gertzbein_robbins(phi, screw, FRAME, Side.LEFT, tolerance_mm=0.0)
    assert strict.grade == "B"
    assert strict.breach_mm == pytest.approx(0.1, abs=0.1)
    assert strict.direction == "lateral"


def test_thread_entering_past_a_step_in_the_dorsal_surface_is_not_a_breach() -> None:
    # the entry sits on a plateau whose lateral edge (a wall facing laterally, 1 mm from the axis)
    # drops 3 mm: the normal at the entry runs along the screw, yet the thread beyond the edge
    # only enters 3 mm deeper, and 2 mm past the entry it faces the wall 0.5 mm away
    n = 101
    affine = _grid(n)
    pts = _points(affine, (n, n, n))
    x, y = pts[:, 0], pts[:, 1]
    top = np.where(x <= 1.0, 10.0, 7.0)
    mask = ((y <= top) & (y >= -20.0) & (np.abs(pts[:, 2]) <= 15.0)).reshape(n, n, n)
    phi = SignedDistance(mask, affine)
    entry = np.array([0.0, 10.0, 0.0])
    screw = Screw(entry, entry + np.array([0.0, -25.0, 0.0]), 7.5)
    gr = gertzbein_robbins(phi, screw, FRAME, Side.LEFT)
    assert (gr.grade, gr.breach_mm, gr.direction) == ("A", 0.0, None)

"""Angle conventions, catalogue snapping and the breach/collision loop on analytic vertebrae."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from inference.errors import InferenceError
from inference.geometry import Frame, SignedDistance, segment_distance
from inference.grading import Screw, gertzbein_robbins
from inference.lumbar.catalogue import fit_diameter, next_smaller, snap_length
from inference.lumbar.draft import VertebraModel, breaches, initial_draft, sized
from inference.lumbar.frames import (
    VertebraAnatomy,
    direction_from_angles,
    screw_angles,
    vertebra_anatomy,
)
from inference.lumbar.head import (
    HEAD_CLEARANCE_MM,
    HEAD_TRIGGER_MM,
    MOVED_MARGIN_MM,
    clear_of_upper,
    upper_clearance,
)
from inference.lumbar.isthmus import centroid_line, channel_along
from inference.lumbar.planner import plan_vertebra, symmetric
from inference.lumbar.sacral import S1_MARGIN_MM, reaim, room_points, widest
from inference.lumbar.tracks import coronal_track
from inference.results import Side
from inference.settings import PLANNABLE_LEVELS, PlanningSettings
from tests.inference.lumbar_helpers import make_vertebra

ROTATIONS = [(0.0, 0.0, 0.0), (20.0, -10.0, 15.0), (-25.0, 5.0, -30.0)]


def _angle(u: np.ndarray, v: np.ndarray) -> float:
    return float(np.degrees(np.arccos(np.clip(np.dot(u, v), -1.0, 1.0))))


@pytest.mark.parametrize("rotation", ROTATIONS)
@pytest.mark.parametrize("side", [Side.LEFT, Side.RIGHT])
def test_angles_come_back_in_a_rotated_vertebra_frame(
    rotation: tuple[float, float, float], side: Side
) -> None:
    rot = Rotation.from_euler("xyz", rotation, degrees=True).as_matrix()
    frame = Frame(np.zeros(3), rot @ [-1.0, 0, 0], rot @ [0, -1.0, 0], rot @ [0, 0, 1.0])
    d = direction_from_angles(frame, 17.0, -4.0, side)
    entry = np.array([10.0, 20.0, 30.0])
    pta, psa = screw_angles(frame, entry, entry + 40.0 * d, side)
    assert pta == pytest.approx(17.0, abs=1e-6)
    assert psa == pytest.approx(-4.0, abs=1e-6)
    # the scanner frame would read a different sagittal angle once the vertebra is tilted
    if rotation != (0.0, 0.0, 0.0):
        scanner = Frame(np.zeros(3), np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.eye(3)[2])
        assert abs(screw_angles(scanner, entry, entry + 40.0 * d, side)[1] + 4.0) > 2.0


def test_convergent_screws_have_positive_pta_on_both_sides() -> None:
    frame = Frame(np.zeros(3), np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.eye(3)[2])
    left_entry, right_entry = np.array([20.0, 30.0, 0.0]), np.array([-20.0, 30.0, 0.0])
    tip = np.array([0.0, -10.0, 0.0])  # both aim at the midline, anteriorly
    assert screw_angles(frame, left_entry, tip, Side.LEFT)[0] > 20.0
    assert screw_angles(frame, right_entry, tip, Side.RIGHT)[0] > 20.0


@pytest.mark.parametrize("rotation", ROTATIONS[:2])
def test_frame_and_pedicle_angles_recovered_on_an_analytic_vertebra(
    rotation: tuple[float, float, float],
) -> None:
    v = make_vertebra(rotation, pta_deg=15.0, psa_deg=0.0, pedicle_radius=5.0)
    hint = v.frame.s + 0.15 * v.frame.a  # a poor cranial hint: the endplates must fix it
    anatomy = vertebra_anatomy(v.mask, v.affine, hint, v.frame.a)
    assert _angle(anatomy.frame.s, v.frame.s) < 1.5
    assert _angle(anatomy.frame.a, v.frame.a) < 2.0
    model = VertebraModel.build("L3", v.mask, v.affine, anatomy)
    plans, warnings = plan_vertebra(model, PlanningSettings(), {})
    assert not warnings
    assert {p.side for p in plans} == {Side.LEFT, Side.RIGHT}
    for p in plans:
        assert p.pta_deg == pytest.approx(15.0, abs=3.0)
        assert p.psa_deg == pytest.approx(0.0, abs=3.0)
        assert p.length_mm <= 0.8 * p.channel_mm
        assert p.length_mm in PlanningSettings().lengths_mm
        assert p.gr_grade in {"A", "B"}


def test_catalogue_snapping() -> None:
    s = PlanningSettings()
    assert snap_length(57.1, 0.8, s.lengths_mm) == 45.0  # 45.7 snapped down
    assert snap_length(62.5, 0.8, s.lengths_mm) == 50.0  # exactly on a size
    assert snap_length(30.0, 0.8, s.lengths_mm) is None
    assert snap_length(200.0, 0.8, s.lengths_mm) == 60.0
    assert fit_diameter(4.0, 0.5, s.diameters_mm) == 7.0
    assert fit_diameter(3.2, 0.5, s.diameters_mm) == 5.0
    assert fit_diameter(2.5, 0.5, s.diameters_mm) is None
    assert next_smaller(6.5, s.diameters_mm) == 6.0
    assert next_smaller(4.5, s.diameters_mm) is None


def test_correction_loop_shrinks_screws_until_they_stop_colliding() -> None:
    # steeply convergent pedicles: full-length screws would cross in the body
    v = make_vertebra((0.0, 0.0, 0.0), pta_deg=38.0, psa_deg=0.0, pedicle_radius=5.0)
    anatomy = vertebra_anatomy(v.mask, v.affine, v.frame.s, v.frame.a)
    model = VertebraModel.build("L5", v.mask, v.affine, anatomy)
    settings = PlanningSettings()
    plans, _ = plan_vertebra(model, settings, {})
    assert len(plans) == 2
    a, b = plans
    gap = segment_distance(
        np.array(a.entry_mm), np.array(a.tip_mm), np.array(b.entry_mm), np.array(b.tip_mm)
    )
    uncorrected = snap_length(min(a.channel_mm, b.channel_mm), 0.8, settings.lengths_mm)
    assert uncorrected is not None
    assert min(a.length_mm, b.length_mm) < uncorrected  # the loop had to step down
    assert gap >= (a.diameter_mm + b.diameter_mm) / 2 + settings.collision_clearance_mm


def test_correction_loop_steps_the_diameter_down_in_a_thin_pedicle() -> None:
    v = make_vertebra((0.0, 0.0, 0.0), pta_deg=12.0, psa_deg=0.0, pedicle_radius=3.2)
    anatomy = vertebra_anatomy(v.mask, v.affine, v.frame.s, v.frame.a)
    model = VertebraModel.build("L2", v.mask, v.affine, anatomy)
    plans, _ = plan_vertebra(model, PlanningSettings(), {})
    for p in plans:
        assert p.diameter_mm <= 5.5
        assert p.gr_grade in {"A", "B"}


def test_centroid_line_follows_a_tall_pedicle_the_corridor_is_blind_to() -> None:
    # a straight pedicle 1.8x taller than wide, tilted 8° cranially: the widest corridor can tilt
    # up and down inside it without losing room, the section centroids cannot
    v = make_vertebra(
        (20.0, -10.0, 15.0),
        pta_deg=15.0,
        psa_deg=8.0,
        pedicle_radius=4.0,
        pedicle_tall=1.8,
        pedicle_flare=0.0,
    )
    anatomy = vertebra_anatomy(v.mask, v.affine, v.frame.s, v.frame.a)
    model = VertebraModel.build("L3", v.mask, v.affine, anatomy)
    start = coronal_track(model.inside, anatomy, Side.LEFT)
    truth = direction_from_angles(v.frame, 15.0, 8.0, Side.LEFT)
    point, axis = start
    for _ in range(4):
        point, axis, _, span = centroid_line(model.inside, point, axis)
    assert span >= 6.0
    assert _angle(axis, truth) < 1.5
    pta, psa = screw_angles(v.frame, point, point + axis, Side.LEFT)
    assert pta == pytest.approx(15.0, abs=1.5)
    assert psa == pytest.approx(8.0, abs=1.5)


@pytest.mark.parametrize("psa", [8.0, -6.0])
def test_both_screws_of_a_symmetric_vertebra_get_mirror_image_angles(psa: float) -> None:
    v = make_vertebra((20.0, -10.0, 15.0), pta_deg=15.0, psa_deg=psa, pedicle_radius=4.0)
    anatomy = vertebra_anatomy(v.mask, v.affine, v.frame.s, v.frame.a)
    model = VertebraModel.build("L3", v.mask, v.affine, anatomy)
    plans, warnings = plan_vertebra(model, PlanningSettings(), {})
    assert not warnings
    left, right = sorted(plans, key=lambda p: str(p.side))
    assert left.pta_deg == pytest.approx(right.pta_deg, abs=0.2)
    assert left.psa_deg == pytest.approx(right.psa_deg, abs=0.2)
    assert left.pta_deg == pytest.approx(15.0, abs=3.0)
    assert left.psa_deg == pytest.approx(psa, abs=3.0)


@pytest.mark.parametrize(
    ("psa", "right", "rescue"),
    [(0.0, (19.0, 0.0), "moved parallel"), (17.0, (15.0, 22.0), None)],  # rescued; implausible
)
def test_a_side_is_not_averaged_with_an_axis_that_is_no_pedicle_estimate(
    psa: float, right: tuple[float, float], rescue: str | None
) -> None:
    v = make_vertebra((20.0, -10.0, 15.0), pta_deg=15.0, psa_deg=psa, pedicle_radius=4.0)
    anatomy = vertebra_anatomy(v.mask, v.affine, v.frame.s, v.frame.a)
    model = VertebraModel.build("L3", v.mask, v.affine, anatomy)
    settings = PlanningSettings()
    own = initial_draft(model, Side.LEFT, settings)
    isthmus = initial_draft(model, Side.RIGHT, settings).channel.isthmus
    d = direction_from_angles(anatomy.frame, *right, Side.RIGHT)
    other = sized(model, Side.RIGHT, channel_along(model.inside, isthmus, d, 100.0), settings)
    drafts = {Side.LEFT: own, Side.RIGHT: dataclasses.replace(other, rescue=rescue)}
    out = symmetric(model, drafts, settings)
    assert out[Side.LEFT] is own and out[Side.RIGHT] is drafts[Side.RIGHT]
    if rescue:  # the same two axes unrescued are averaged
        mean = symmetric(model, {Side.LEFT: own, Side.RIGHT: other}, settings)[Side.LEFT]
        pta = screw_angles(anatomy.frame, mean.channel.entry, mean.channel.exit, Side.LEFT)[0]
        assert pta == pytest.approx(17.0, abs=1.0)


def test_an_axis_no_pedicle_has_is_not_planned_with_a_reason() -> None:
    # A pedicle converges and runs near the endplate's plane (ALGORITHMS.md): an axis steeper
    # than that followed something else (on a 3 mm phantom: the body's rim, 35 mm off).
    v = make_vertebra((0.0, 0.0, 0.0), pta_deg=15.0, psa_deg=25.0, pedicle_radius=4.0)
    anatomy = vertebra_anatomy(v.mask, v.affine, v.frame.s, v.frame.a)
    model = VertebraModel.build("L3", v.mask, v.affine, anatomy)
    plans, warnings = plan_vertebra(model, PlanningSettings(), {})
    assert plans == []
    assert len(warnings) == 2 and all("is not a pedicle's" in w for w in warnings)


def _slab_scene(
    level: str = "L3", block_z0: int = 5, slab_z0: int = -12
) -> tuple[VertebraModel, SignedDistance]:
    """A bone slab (x ±15, y −30…20, z ``slab_z0``…12 mm LPS; posterior surface y = 20) and,
    behind it, a block of the vertebra above (an inferior articular process, z from ``block_z0``
    to 5 mm above) just cranial of where a screw along −y through the slab's centre enters (1 mm
    grid)."""
    n = 81
    affine = np.eye(4)
    affine[:3, 3] = -40.0
    x, y, z = (np.indices((n, n, n)) - 40.0).astype(np.float64)
    slab = (np.abs(x) <= 15) & (y >= -30) & (y <= 20) & (z >= slab_z0) & (z <= 12)
    block = (np.abs(x) <= 4) & (y >= 21) & (y <= 26) & (z >= block_z0) & (z <= block_z0 + 5)
    frame = Frame(np.zeros(3), np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.eye(3)[2])
    anatomy = VertebraAnatomy(frame, slab, 20.0, -30.0)
    return VertebraModel.build(level, slab, affine, anatomy), SignedDistance(block, affine)


def test_screw_head_is_moved_clear_of_the_vertebra_above() -> None:
    model, upper = _slab_scene()
    settings = PlanningSettings()
    ch = channel_along(model.inside, np.zeros(3), np.array([0.0, -1.0, 0.0]), 100.0)
    draft = sized(model, Side.LEFT, ch, settings)
    assert upper_clearance(upper, draft.screw) < 1.5
    moved = clear_of_upper(model, draft, upper, settings)
    assert upper_clearance(upper, moved.screw) >= HEAD_CLEARANCE_MM
    assert moved.diameter == draft.diameter  # moved, not shrunk
    shift = moved.channel.entry - draft.channel.entry
    assert shift[2] < -1.0  # caudal, away from the block
    assert np.linalg.norm(shift) <= 4.0
    gr = gertzbein_robbins(model.phi, moved.screw, model.anatomy.frame, Side.LEFT)
    assert gr.grade == "A"


def test_a_moved_screw_keeps_bone_between_its_thread_and_the_surface() -> None:
    # the slab ends 5 mm below the screw's axis: the parallel move away from the block above must
    # not take the thread to within MOVED_MARGIN_MM of the slab's lower surface
    model, upper = _slab_scene(slab_z0=-5)
    settings = PlanningSettings()
    ch = channel_along(model.inside, np.zeros(3), np.array([0.0, -1.0, 0.0]), 100.0)
    moved = clear_of_upper(model, sized(model, Side.LEFT, ch, settings), upper, settings)
    assert upper_clearance(upper, moved.screw) >= HEAD_CLEARANCE_MM
    assert float(model.phi(moved.screw.surface_points()).max()) <= -MOVED_MARGIN_MM + 1e-3


def test_a_head_move_with_room_moves_the_whole_axis() -> None:
    # the slab has room: the screw is moved parallel, its angles do not change
    settings = PlanningSettings()
    model, upper = _slab_scene("L5", block_z0=6)
    ch = channel_along(model.inside, np.zeros(3), np.array([0.0, -1.0, 0.0]), 100.0)
    draft = sized(model, Side.LEFT, ch, settings)
    assert upper_clearance(upper, draft.screw) < HEAD_CLEARANCE_MM
    moved = clear_of_upper(model, draft, upper, settings)
    assert upper_clearance(upper, moved.screw) >= HEAD_CLEARANCE_MM
    assert moved.diameter == draft.diameter
    assert np.linalg.norm(moved.channel.entry - draft.channel.entry) > 0.5
    assert _angle(moved.channel.direction, draft.channel.direction) < 0.1


def _tube_model(radius: float, level: str = "S1") -> VertebraModel:
    """A straight bone tube of ``radius`` mm along −y (LPS, y from 25 to −35 mm, 0.5 mm grid)."""
    n = 141
    affine = np.diag([0.5, 0.5, 0.5, 1.0])
    affine[:3, 3] = -35.0
    x, y, z = (np.indices((n, n, n)) * 0.5 - 35.0).astype(np.float64)
    tube = (x**2 + z**2 <= radius**2) & (y >= -35.0) & (y <= 25.0)
    frame = Frame(np.zeros(3), np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.eye(3)[2])
    return VertebraModel.build(level, tube, affine, VertebraAnatomy(frame, tube, 25.0, -35.0))


def test_an_s1_screw_that_breaches_at_the_smallest_size_is_re_aimed_into_the_pedicle() -> None:
    model = _tube_model(3.0)
    settings = PlanningSettings()
    off = np.array([np.sin(np.radians(6.0)), -np.cos(np.radians(6.0)), 0.0])  # 6° off the tube
    ch = channel_along(model.inside, np.zeros(3), off, 30.0)
    draft = sized(model, Side.LEFT, ch, settings)
    draft = type(draft)(draft.side, ch, settings.lengths_mm[0], settings.diameters_mm[0])
    frame = model.anatomy.frame
    assert gertzbein_robbins(model.phi, draft.screw, frame, Side.LEFT).grade != "A"
    fixed = reaim(model, draft, settings)
    assert gertzbein_robbins(model.phi, fixed.screw, frame, Side.LEFT).grade == "A"
    assert _angle(fixed.channel.direction, off) <= 6.0 + 1e-6  # a small tilt, not a new plan
    assert fixed.diameter >= settings.diameters_mm[0]
    # a lumbar axis is measured, not a prior: it keeps its angles
    lumbar = _tube_model(3.0, "L5")
    assert reaim(lumbar, draft, settings) is draft


def test_a_screw_that_fits_is_not_re_aimed() -> None:
    model = _tube_model(4.0)
    settings = PlanningSettings()
    ch = channel_along(model.inside, np.zeros(3), np.array([0.0, -1.0, 0.0]), 50.0)
    draft = sized(model, Side.LEFT, ch, settings)
    assert reaim(model, draft, settings) is draft


def test_an_s1_axis_beside_the_bone_is_moved_parallel_to_where_it_has_room() -> None:
    # the S1 track's point can sit in a gap of our mask (seeds 10, 15: channel 0.3 mm, no screw):
    # the prior axis is moved parallel to the nearest line with room for the widest screw
    model = _tube_model(6.0)
    settings = PlanningSettings()
    d = np.array([0.0, -1.0, 0.0])
    off = channel_along(model.inside, np.array([7.0, 0.0, 0.0]), d, 30.0)
    assert off.length < 1.0  # the point lies outside the tube
    point = room_points(model, off, settings)[0]
    assert np.hypot(point[0], point[2]) <= 6.0 - S1_MARGIN_MM - 3.75 + 0.5
    moved = channel_along(model.inside, point, d, 30.0)
    draft, kept = widest(model, sized(model, Side.LEFT, moved, settings), settings)
    assert kept
    assert draft.diameter == settings.diameters_mm[-1]
    assert draft.length >= 40.0
    assert gertzbein_robbins(model.phi, draft.screw, model.anatomy.frame, Side.LEFT).grade == "A"
    assert _angle(draft.channel.direction, d) < 1e-6  # moved, not turned


def test_an_s1_axis_with_room_stays_and_gets_the_widest_screw_its_room_allows() -> None:
    model = _tube_model(4.0)
    settings = PlanningSettings()
    ch = channel_along(model.inside, np.zeros(3), np.array([0.0, -1.0, 0.0]), 30.0)
    assert np.allclose(room_points(model, ch, settings)[0], ch.isthmus)
    small = type(sized(model, Side.LEFT, ch, settings))(Side.LEFT, ch, 40.0, 4.5)
    wide, kept = widest(model, small, settings)
    assert kept
    # radius 4 mm tube: the thread keeps S1_MARGIN_MM of bone up to a 6.0 mm screw (5.5 on the
    # voxelised tube's distance field), and one size more would not
    assert wide.diameter in {5.5, 6.0}
    assert not breaches(model, wide, -S1_MARGIN_MM)
    assert breaches(model, type(wide)(Side.LEFT, ch, 40.0, wide.diameter + 0.5), -S1_MARGIN_MM)


def test_a_sixth_lumbar_vertebra_may_be_asked_for_but_is_not_planned_by_default() -> None:
    # seeds 4 and 8 have an L6: its screws grade GR A but half of them Babu 1 on the true masks
    assert "L6" not in PlanningSettings().levels
    assert PlanningSettings(levels=PLANNABLE_LEVELS).levels.index("L6") == 5
    with pytest.raises(InferenceError):
        PlanningSettings(levels=("L7",))


def test_a_screw_head_left_near_the_vertebra_above_is_reported() -> None:
    # no head move within MAX_PIVOT_DEG clears a head that the upper bone overhangs: the screw is
    # planned and the surgeon told (seed 16 L3 right, 3 mm: 0.3 -> 0.6 mm, Babu 0 on the truth)
    v = make_vertebra()
    anatomy = vertebra_anatomy(v.mask, v.affine, v.frame.s, v.frame.a)
    model = VertebraModel.build("L3", v.mask, v.affine, anatomy)
    settings = PlanningSettings()
    plans, warnings = plan_vertebra(model, settings, {})
    assert len(plans) == 2 and not warnings
    left = next(p for p in plans if p.side == Side.LEFT)
    # a cube (half-size 6 mm) of the vertebra above right behind the left entry
    centre = np.array(left.entry_mm) - 7.0 * v.frame.a
    n = v.mask.shape[0]
    idx = np.indices(v.mask.shape).reshape(3, -1).T.astype(np.float64)
    pts = idx @ v.affine[:3, :3].T + v.affine[:3, 3]
    block = (np.abs(pts - centre).max(axis=1) <= 6.0).reshape(n, n, n) & ~v.mask
    upper = SignedDistance(block, v.affine)
    plans, warnings = plan_vertebra(model, settings, {}, upper)
    assert {p.side for p in plans} == {Side.LEFT, Side.RIGHT}
    near = [w for w in warnings if "check the facet joint" in w]
    assert len(near) == 1 and near[0].startswith("L3 left: the screw head stays")
    planned = next(p for p in plans if p.side == Side.LEFT)
    screw = Screw(np.array(planned.entry_mm), np.array(planned.tip_mm), planned.diameter_mm)
    assert upper_clearance(upper, screw) < HEAD_TRIGGER_MM

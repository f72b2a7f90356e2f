"""A dark vertebral body (fatty, osteopenic marrow) keeps its back through the native labels."""

from __future__ import annotations

import numpy as np

from inference.geometry import Frame, index_to_mm
from inference.lumbar.body import with_native_labels
from inference.lumbar.engine import NativeLabels, prepare_levels
from inference.pipeline import Segmentation
from inference.segment.assign import OTHER
from inference.segment.grid import WorkingVolume
from inference.settings import PlanningSettings
from inference.verse import LEVEL_TO_LABEL
from tests.inference.lumbar_helpers import make_vertebra


def test_native_labels_fill_only_the_background_of_their_own_vertebra() -> None:
    work = np.eye(4)  # 1 mm grid; the native grid has 3 mm slices, the same origin and axes
    native_affine = np.diag([3.0, 1.0, 1.0, 1.0])
    native = np.zeros((12, 34, 34), dtype=np.uint8)
    native[2:8, 6:22, 6:22] = LEVEL_TO_LABEL["L2"]  # slices 6-21 mm, rows and columns 6-21 mm
    native[2:8, 6:22, 24:31] = LEVEL_TO_LABEL["L3"]
    inst = np.zeros((34, 34, 34), dtype=np.uint8)
    inst[8:20, 6:22, 6:22] = 1  # L2 ...
    inst[10:18, 12:22, 10:18] = 0  # ... with a dark notch open at its back (rows 12-21)
    inst[12, 14, 12] = 2  # a voxel of L3 and one of other bone inside the notch stay theirs
    inst[12, 15, 12] = OTHER
    out = with_native_labels(inst, work, ("L2", "L3"), native, native_affine)
    notch = np.zeros(inst.shape, dtype=bool)
    notch[10:18, 12:22, 10:18] = True
    notch[12, 14:16, 12] = False
    assert (out[notch] == 1).all()
    assert out[12, 14, 12] == 2 and out[12, 15, 12] == OTHER
    assert (out[8:20, 8:20, 25:30] == 2).all()  # L3's native label fills its own instance
    assert (out[inst != 0] == inst[inst != 0]).all()  # nothing labelled is taken
    assert (out[:, :, 32:] == 0).all() and (out[:3] == 0).all()  # nor anything outside
    # in-plane the label's own border (row 21 in, 22 out); across the 3 mm slices (label up to
    # 22 mm by the linear fraction) only what lies a slice less a voxel inside: up to 20 mm
    assert out[12, 21, 12] == 1 and out[12, 22, 12] == 0
    assert out[20, 14, 14] == 1 and (out[21:, 14, 14] == 0).all()


def test_s1_keeps_its_working_mask() -> None:
    # filled from the native labels the S1 screws moved 1.9 mm farther from the reference
    native = np.zeros((12, 12, 12), dtype=np.uint8)
    native[2:8, 2:8, 2:8] = LEVEL_TO_LABEL["S1"]
    inst = np.zeros((34, 34, 34), dtype=np.uint8)
    inst[8:20, 8:20, 8:20] = 1
    inst[12:16, 12:20, 12:16] = 0
    out = with_native_labels(inst, np.eye(4), ("S1",), native, np.diag([3.0, 3.0, 3.0, 1.0]))
    assert (out == inst).all()


def _dark_body_segmentation() -> tuple[Segmentation, NativeLabels, Frame, float]:
    """An L2 turned 8° about its long axis whose 1 mm working mask misses the back of its body,
    off-centre (the dark marrow the bone threshold loses on the real 3 mm CT), and its native
    3 mm label with the whole body; the true frame and back wall (local a, mm)."""
    v = make_vertebra((0.0, 0.0, 8.0), pta_deg=12.0)
    loc = v.frame.to_local(index_to_mm(v.affine, np.argwhere(np.ones(v.mask.shape, bool))))
    lr, la, ls = (c.reshape(v.mask.shape) for c in loc.T)
    inside = ((lr / 22.0) ** 2 + (la / 16.0) ** 2 <= 1.0) & (np.abs(ls) <= 13.0)
    dark = inside & (la < -3.0) & (lr > -14.0) & (lr < 6.0)
    instances = (v.mask & ~dark).astype(np.uint8)
    coarse = make_vertebra((0.0, 0.0, 8.0), pta_deg=12.0, spacing=3.0)
    labels = np.where(coarse.mask, LEVEL_TO_LABEL["L2"], 0).astype(np.uint8)
    grid = WorkingVolume(
        hu=np.zeros((1, 1, 1), np.float32),
        affine=v.affine,
        box=(slice(0, 1), slice(0, 1), slice(0, 1)),
        native_affine=coarse.affine,
        native_shape=coarse.mask.shape,
        spine_point=np.zeros(3),
    )
    seg = Segmentation(grid, instances, ("L2",), (1.0,), np.zeros((1, 3)), ())
    return seg, NativeLabels(labels, coarse.affine), v.frame, -16.0


def _axial_turn_deg(frame: Frame, truth: Frame) -> float:
    """The angle of ``frame.a`` about the true long axis (degrees)."""
    return float(np.degrees(np.arctan2(frame.a @ truth.r, frame.a @ truth.a)))


def test_a_dark_body_keeps_its_back_wall_and_frame_with_the_native_labels() -> None:
    seg, native, truth, true_back = _dark_body_segmentation()
    settings = PlanningSettings(levels=("L2",))
    [alone], _ = prepare_levels(seg, settings)
    [whole], _ = prepare_levels(seg, settings, native)
    # the working mask alone: the body found is the front two thirds, the frame turned by it
    assert alone.model.anatomy.body_back_mm > true_back + 5.0
    assert abs(_axial_turn_deg(alone.model.anatomy.frame, truth)) > 3.0
    # with the native labels the body is whole again
    anatomy = whole.model.anatomy
    assert abs(anatomy.body_back_mm - true_back) < 1.5
    assert abs(_axial_turn_deg(anatomy.frame, truth)) < 1.0
    assert whole.model.mask.sum() > alone.model.mask.sum()

"""``plan_lumbar`` shares the levels between two processes: the plan is the serial one."""

from __future__ import annotations

import numpy as np

from inference.lumbar.engine import NativeLabels, _s1_core, plan_lumbar
from inference.phantom import PhantomSpec, generate
from inference.pipeline import segment_volume
from inference.segment.grid import to_native
from inference.settings import PlanningSettings


def test_levels_planned_in_two_processes_give_the_serial_plan() -> None:
    # a 3 mm phantom, cropped; L5 and S1 (the S1 path: its core, sacral axes) plus L4 above
    spec = PhantomSpec.from_seed(
        6,
        "lumbar",
        spacing_mm=(3.0, 1.0, 1.0),
        fov_mm=160.0,
        include_t12=False,
        include_l6=False,
        osteoporosis=False,
    )
    ph = generate(spec)
    seg = segment_volume(ph.hu, ph.affine)
    native = NativeLabels(to_native(seg.verse_labels(), seg.work), seg.work.native_affine)
    settings = PlanningSettings(levels=("L4", "L5", "S1"))
    serial = plan_lumbar(seg, settings, native, workers=1)
    shared = plan_lumbar(seg, settings, native, workers=2)
    assert [v.level for v in serial.vertebrae] == ["L4", "L5", "S1"]
    assert len(serial.screws) >= 4
    assert shared.vertebrae == serial.vertebrae
    assert shared.screws == serial.screws  # entry, tip, sizes, angles, grades: exactly
    assert shared.warnings == serial.warnings


def _s1_core_on_the_box(mask: np.ndarray, affine: np.ndarray, l5: np.ndarray) -> np.ndarray:
    """The S1 core as first written: every voxel of the box mapped to mm."""
    idx = np.indices(mask.shape).reshape(3, -1).T
    pts = idx @ affine[:3, :3].T + affine[:3, 3]
    keep = (np.abs(pts[:, 0] - l5[0]) < 25.0) & (np.linalg.norm(pts - l5, axis=1) < 60.0)
    out: np.ndarray = mask & keep.reshape(mask.shape)
    return out if out.sum() > 1000 else mask


def test_s1_core_on_the_mask_voxels_equals_the_whole_box_computation() -> None:
    rng = np.random.default_rng(3)
    for trial in range(4):
        mask = rng.random((60, 70, 80)) < 0.3
        affine = np.eye(4)
        affine[:3, :3] = np.diag([1.0, 0.8, 0.8]) @ _rotation(rng)
        affine[:3, 3] = rng.normal(0.0, 50.0, 3)
        centre = affine[:3, :3] @ np.array([30.0, 35.0, 40.0]) + affine[:3, 3]
        l5 = centre + rng.normal(0.0, 20.0, 3) * (trial + 1) / 2
        assert np.array_equal(_s1_core(mask, affine, l5), _s1_core_on_the_box(mask, affine, l5))


def _rotation(rng: np.random.Generator) -> np.ndarray:
    q, _ = np.linalg.qr(rng.normal(size=(3, 3)))
    return q

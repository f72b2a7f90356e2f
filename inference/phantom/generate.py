"""``generate(spec) -> Phantom``: anatomy → truth → raster → blur and noise."""

from __future__ import annotations

import dataclasses
import json
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt

from inference.phantom.anatomy import build_anatomy
from inference.phantom.model import Anatomy
from inference.phantom.scan import (
    Raster,
    blur_and_noise,
    grid,
    paint_bone,
    paint_joint_spaces,
    paint_soft,
    paint_torso,
)
from inference.phantom.spec import PhantomSpec
from inference.phantom.truth import PhantomTruth, c2_truth, vertebra_truth

logger = logging.getLogger(__name__)

JOINT_HU = 30.0


@dataclass(frozen=True, slots=True, eq=False)
class Phantom:
    """A generated phantom.

    Attributes
    ----------
    hu:
        ``float32`` Hounsfield units ``[slice, row, column]``.
    affine:
        ``4×4`` index ``(slice, row, column, 1)`` → DICOM LPS mm.
    labels:
        ``uint8`` VerSe ids (C1..C7 = 1..7, T12 = 19, L1..L5 = 20..24, L6 = 25, S1/sacrum = 26).
    parts:
        ``uint8`` :class:`~inference.phantom.model.PartId` values (pedicles per side, facet joint
        spaces per side, C2 pediculoisthmic components per side).
    truth:
        The exact ground truth (``truth.to_json()`` is ``truth.json``).
    """

    spec: PhantomSpec
    hu: npt.NDArray[np.float32]
    affine: npt.NDArray[np.float64]
    labels: npt.NDArray[np.uint8]
    parts: npt.NDArray[np.uint8]
    truth: PhantomTruth
    anatomy: Anatomy
    timings: dict[str, float] = field(default_factory=dict)


def spec_json(spec: PhantomSpec) -> dict[str, Any]:
    """The spec as plain JSON values (``truth.json["parameters"]``)."""
    out: dict[str, Any] = json.loads(json.dumps(dataclasses.asdict(spec), default=str))
    return out


def generate(spec: PhantomSpec) -> Phantom:
    """Build the phantom described by ``spec`` (a pure function: same spec → same bytes)."""
    t0 = time.perf_counter()
    anatomy = build_anatomy(spec)
    affine, shape = grid(spec, anatomy)
    ramp = float(np.prod(spec.spacing_mm) ** (1 / 3))
    raster = Raster(
        np.empty(shape, np.float32),
        np.zeros(shape, np.uint8),
        np.zeros(shape, np.uint8),
        affine,
        ramp,
    )
    logger.info("phantom seed %d kind %s grid %s", spec.seed, spec.kind, shape)
    t1 = time.perf_counter()
    paint_torso(raster, anatomy, spec.seed)
    for region in anatomy.soft:
        paint_soft(raster, region.shape, region.hu)
    for joint in anatomy.joints:
        paint_soft(raster, joint.space, JOINT_HU)
    bone_hu = (spec.cortical_hu, spec.cancellous_hu)
    for v in anatomy.vertebrae:
        paint_bone(raster, v.parts, v.label, bone_hu, [spec.seed, v.label])
    for k, bone in enumerate(anatomy.extra_bones):
        paint_bone(raster, (bone,), 0, bone_hu, [spec.seed, 100 + k])
    paint_joint_spaces(raster, anatomy)
    t2 = time.perf_counter()
    hu = blur_and_noise(raster.hu, spec)
    t3 = time.perf_counter()
    truth = PhantomTruth(
        seed=spec.seed,
        kind=str(spec.kind),
        shape=shape,
        affine=tuple(tuple(float(x) for x in row) for row in affine),
        vertebrae=tuple(vertebra_truth(v, anatomy) for v in anatomy.vertebrae),
        c2=tuple(c2_truth(p) for p in anatomy.c2_components),
        tissue={
            "cortical_hu": spec.cortical_hu,
            "cancellous_hu": spec.cancellous_hu,
            "age_years": spec.age_years,
            "noise_hu": spec.noise_hu,
        },
        parameters=spec_json(spec),
    )
    t4 = time.perf_counter()
    timings = {"anatomy": t1 - t0, "paint": t2 - t1, "blur_noise": t3 - t2, "truth": t4 - t3}
    return Phantom(spec, hu, affine, raster.labels, raster.parts, truth, anatomy, timings)

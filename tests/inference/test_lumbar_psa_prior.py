"""The image PSA weighed against the 0° prior by the input grid's sampling step along s."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from inference.geometry import Frame, SignedDistance, VolumeSampler, unit
from inference.lumbar.frames import sampling_step, screw_angles, vertebra_anatomy
from inference.lumbar.isthmus import axis_clearance, pedicle_axis, psa_toward_prior
from inference.results import Side
from tests.inference.lumbar_helpers import make_vertebra


def _axial(slice_mm: float, pixel_mm: float) -> np.ndarray:
    """Affine of an axial stack (slice axis = z, LPS)."""
    affine = np.eye(4)
    affine[:3, :3] = np.array([[0, 0, pixel_mm], [0, pixel_mm, 0], [slice_mm, 0, 0]])
    return affine


def test_sampling_step_is_the_slice_spacing_along_a_tilted_s() -> None:
    s = np.array([0.0, -np.sin(np.radians(10.0)), np.cos(np.radians(10.0))])
    assert sampling_step(_axial(3.0, 0.78), s) == pytest.approx(3.0 * np.cos(np.radians(10.0)))
    assert sampling_step(_axial(1.0, 0.8), s) == pytest.approx(np.cos(np.radians(10.0)))
    # a sagittal stack (slice axis = x) resolves heights along s at its in-plane pixel
    sagittal = np.eye(4)
    sagittal[:3, :3] = np.array([[3.0, 0, 0], [0, 0, 0.8], [0, 0.8, 0]])
    assert sampling_step(sagittal, s) == pytest.approx(0.8 * np.cos(np.radians(10.0)))


def _slope(d: np.ndarray, e: np.ndarray, frame: Frame) -> float:
    return float((d @ e) / (d @ frame.a))


def test_psa_drawn_toward_zero_by_the_step() -> None:
    frame = Frame(
        np.zeros(3), np.array([-1.0, 0, 0]), np.array([0, -1.0, 0]), np.array([0, 0, 1.0])
    )
    d = unit(frame.a + np.tan(np.radians(12.0)) * frame.r + np.tan(np.radians(6.0)) * frame.s)
    axis = (np.zeros(3), d, 50.0)
    kept = psa_toward_prior(frame, axis, 0.0)[1]
    assert np.allclose(kept, d)
    half = psa_toward_prior(frame, axis, 3.0)[1]  # σi = 3° = σp: weight 0.5
    fine = psa_toward_prior(frame, axis, 1.0)[1]  # weight 0.9
    assert _slope(half, frame.s, frame) == pytest.approx(0.5 * np.tan(np.radians(6.0)))
    assert _slope(fine, frame.s, frame) == pytest.approx(0.9 * np.tan(np.radians(6.0)))
    assert _slope(half, frame.r, frame) == pytest.approx(np.tan(np.radians(12.0)))


def test_pedicle_axis_on_coarse_slices_keeps_half_the_image_psa() -> None:
    # a 1 mm mask resampled from 3 mm slices: the anatomy carries the input's step, and the
    # pedicle axis' PSA (6° in the image) is drawn halfway to the prior; without the input's
    # grid the image PSA is kept
    v = make_vertebra((0.0, 0.0, 0.0), pta_deg=12.0, psa_deg=6.0, pedicle_radius=5.0)
    s, a = v.frame.s, v.frame.a
    fine = vertebra_anatomy(v.mask, v.affine, s, a)
    coarse = vertebra_anatomy(v.mask, v.affine, s, a, native_affine=_axial(3.0, 0.78))
    assert fine.step_mm == 0.0 and coarse.step_mm == pytest.approx(3.0, abs=0.05)
    inside = VolumeSampler(v.mask.astype(np.float32), v.affine, 0.0)
    phi = SignedDistance(v.mask, v.affine)
    psa = []
    for anatomy in (fine, dataclasses.replace(coarse, frame=fine.frame)):
        point, d, _ = pedicle_axis(inside, phi, anatomy, Side.LEFT)
        psa.append(screw_angles(anatomy.frame, point, point + d, Side.LEFT)[1])
    assert psa[0] > 1.0, psa
    assert np.tan(np.radians(psa[1])) == pytest.approx(0.5 * np.tan(np.radians(psa[0])), abs=1e-3)


def test_the_prior_does_not_move_the_axis_out_of_a_narrow_pedicle() -> None:
    # a narrow pedicle tilted 20°: drawn halfway to 0° the axis would come nearer its
    # roof and floor at the isthmus ± 3 mm, more than the prior may take (PRIOR_GIVE_MM): the
    # image's axis is kept on the 3 mm grid too
    v = make_vertebra((0.0, 0.0, 0.0), pta_deg=12.0, psa_deg=20.0, pedicle_radius=3.0)
    s, a = v.frame.s, v.frame.a
    fine = vertebra_anatomy(v.mask, v.affine, s, a)
    coarse = dataclasses.replace(fine, step_mm=3.0)
    inside = VolumeSampler(v.mask.astype(np.float32), v.affine, 0.0)
    phi = SignedDistance(v.mask, v.affine)
    kept = pedicle_axis(inside, phi, fine, Side.RIGHT)
    guarded = pedicle_axis(inside, phi, coarse, Side.RIGHT)
    psa = screw_angles(fine.frame, kept[0], kept[0] + kept[1], Side.RIGHT)[1]
    assert psa > 15.0, psa
    assert np.allclose(guarded[1], kept[1])
    drawn = psa_toward_prior(fine.frame, kept, 3.0)
    assert (
        axis_clearance(inside, drawn[0], drawn[1]) < axis_clearance(inside, kept[0], kept[1]) - 0.25
    )

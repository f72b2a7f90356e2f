"""Body borders put on the disc (inference.segment.discs) on a synthetic two-body column, 1 mm
grid indexed [slice, row, col] (slice = cranial)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from scipy import ndimage

from inference.segment.discs import find_disc, split_at_disc_valleys

SHAPE = (80, 40, 40)
RADIUS_MM = 14.0
# lower body slices 4..35, disc 36..40, upper body 41..79 (cut by the top of the volume)
DISC = (36, 41)
SPACING = np.ones(3)


def _column(disc_hu: float = 115.0) -> npt.NDArray[np.float32]:
    """Two bodies (marrow: lower 130 HU, upper 95 HU, as the real CT's L1 and T12) with 2 mm
    endplates of 200 / 160 HU either side of a disc, in 0 HU soft tissue, smoothed 1 mm."""
    z = np.arange(SHAPE[0])[:, None, None]
    rr, cc = np.mgrid[: SHAPE[1], : SHAPE[2]]
    inside = ((rr - 20.0) ** 2 + (cc - 20.0) ** 2 <= RADIUS_MM**2)[None]
    hu = np.where(z < DISC[0], 130.0, 95.0) * np.ones(SHAPE)
    hu[DISC[0] : DISC[1]] = disc_hu
    hu[DISC[0] - 2 : DISC[0]] = 200.0  # lower body's upper endplate
    hu[DISC[1] : DISC[1] + 2] = 160.0  # upper body's lower endplate
    hu[:4] = 0.0
    hu = np.where(inside, hu, 0.0)
    out: npt.NDArray[np.float32] = ndimage.gaussian_filter(hu, 1.0).astype(np.float32)
    return out


def _cores() -> npt.NDArray[np.int16]:
    """Rank 1 (upper) only near the top of its body, rank 2 (lower) up into the disc."""
    z = np.arange(SHAPE[0])[:, None, None]
    rr, cc = np.mgrid[: SHAPE[1], : SHAPE[2]]
    near_axis = ((rr - 20.0) ** 2 + (cc - 20.0) ** 2 <= 9.0**2)[None]  # body eroded 5 mm
    out = np.zeros(SHAPE, dtype=np.int16)
    out[((z >= 68) & (z < 78)) & near_axis] = 1
    out[((z >= 12) & (z < 39)) & near_axis] = 2
    return out


def _body() -> npt.NDArray[np.bool_]:
    rr, cc = np.mgrid[: SHAPE[1], : SHAPE[2]]
    inside = (rr - 20.0) ** 2 + (cc - 20.0) ** 2 <= RADIUS_MM**2
    out = np.zeros(SHAPE, dtype=bool)
    out[4:] = inside
    return out


def test_find_disc_puts_the_valley_between_the_endplates() -> None:
    hu, cores = _column(), _cores()
    disc = find_disc(cores == 1, cores == 2, hu, SPACING)
    assert disc is not None
    # the profile runs from the upper core (z ~ 72.5) down the column: z = 72.5 - t
    z_mid = 72.5 - disc.t_mm
    assert DISC[0] - 0.5 <= z_mid <= DISC[1] + 0.5
    assert disc.depth_hu > 15.0


def test_the_border_moves_from_the_upper_body_onto_the_disc() -> None:
    hu, cores, body = _column(), _cores(), _body()
    z = np.arange(SHAPE[0])[:, None, None]
    # the lower body's front took the disc and the upper body's lowest 10 mm
    labels = np.where(body, np.where(z < DISC[1] + 10, 2, 1), 0).astype(np.uint8)
    out = split_at_disc_valleys(labels.copy(), cores, hu, SPACING)
    upper = body & (z >= DISC[1])  # from its endplate, 2.5 mm beyond the disc's mid-plane
    lower = body & (z < DISC[0] - 3)
    assert np.all(out[upper] == 1)
    assert np.all(out[lower] == 2)
    # the disc's middle (partial-volumed, as bright as the upper marrow) is cleared
    mid = body & (z >= DISC[0] + 1) & (z < DISC[1] - 1)
    assert (out[mid] == 0).mean() > 0.9


def test_a_border_already_on_the_disc_stays() -> None:
    hu, cores, body = _column(), _cores(), _body()
    z = np.arange(SHAPE[0])[:, None, None]
    labels = np.where(body, np.where(z < DISC[0], 2, 1), 0).astype(np.uint8)
    labels[body & (z >= DISC[0]) & (z < DISC[1])] = 0
    out = split_at_disc_valleys(labels.copy(), cores, hu, SPACING)
    assert np.array_equal(out[body & (z >= DISC[1] + 2)], labels[body & (z >= DISC[1] + 2)])
    assert np.array_equal(out[body & (z < DISC[0] - 2)], labels[body & (z < DISC[0] - 2)])


def test_no_valley_no_change() -> None:
    """A column without a disc (one marrow space, two cores): nothing moves."""
    hu = np.where(_body(), 120.0, 0.0).astype(np.float32)
    hu = ndimage.gaussian_filter(hu, 1.0).astype(np.float32)
    cores, body = _cores(), _body()
    z = np.arange(SHAPE[0])[:, None, None]
    labels = np.where(body, np.where(z < 50, 2, 1), 0).astype(np.uint8)
    out = split_at_disc_valleys(labels.copy(), cores, hu, SPACING)
    assert np.array_equal(out, labels)


def test_no_disc_without_an_endplate_on_each_side() -> None:
    """Marrow fading from the upper core down to the lower body's endplate is no disc: the
    profile's highest value above the dip is at its start (the core), not an endplate."""
    z = np.arange(SHAPE[0])[:, None, None].astype(np.float64)
    hu = np.where(z >= 33, 150.0 + (z - 33.0) * 50.0 / 46.0, 130.0) * np.ones(SHAPE)
    hu[30:33] = 220.0
    hu = np.where(_body(), hu, 0.0)
    smooth = ndimage.gaussian_filter(hu, 1.0).astype(np.float32)
    assert find_disc(_cores() == 1, _cores() == 2, smooth, SPACING) is None


def test_no_disc_between_cores_wider_than_a_body() -> None:
    """Cores 30 mm across the axis (a sacrum with its alae) are not two bodies, though their
    column has a disc."""
    shape = (80, 70, 70)
    z = np.arange(shape[0])[:, None, None]
    rr, cc = np.mgrid[: shape[1], : shape[2]]
    disk = (rr - 35.0) ** 2 + (cc - 35.0) ** 2
    hu = np.where(z < DISC[0], 130.0, 95.0) * np.ones(shape)
    hu[DISC[0] : DISC[1]] = 60.0
    hu[DISC[0] - 2 : DISC[0]] = 200.0
    hu[DISC[1] : DISC[1] + 2] = 160.0
    hu = np.where((disk <= 33.0**2)[None], hu, 0.0)
    smooth = ndimage.gaussian_filter(hu, 1.0).astype(np.float32)
    wide = (disk <= 30.0**2)[None]
    a, b = wide & (z >= 60) & (z < 76), wide & (z >= 12) & (z < 30)
    assert find_disc(a, b, smooth, SPACING) is None
    narrow = (disk <= 12.0**2)[None]
    assert find_disc(a & narrow, b & narrow, smooth, SPACING) is not None


def test_a_tilted_contact_does_not_hide_the_disc() -> None:
    """The growth met 30 deg off the (level) disc: the profile along the contact plane's normal
    smears the disc; the one along the cores' line still shows it and the border moves."""
    hu, cores, body = _column(), _cores(), _body()
    z = np.arange(SHAPE[0])[:, None, None]
    rr = np.mgrid[: SHAPE[1], : SHAPE[2]][0][None]
    tilted = z < 50.0 + np.tan(np.radians(30.0)) * (rr - 20.0)
    labels = np.where(body, np.where(tilted, 2, 1), 0).astype(np.uint8)
    out = split_at_disc_valleys(labels.copy(), cores, hu, SPACING)
    assert np.all(out[body & (z >= DISC[1])] == 1)

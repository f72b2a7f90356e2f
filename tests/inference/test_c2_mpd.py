"""C2 MPD geometry on constructed shapes: caliper widths, tilted waisted tubes, the cut-off."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from inference.c2.assess import assess_c2, side_of
from inference.c2.locate import C2Frame
from inference.c2.mpd import Scan, measure_mpd
from inference.c2.probability import logistic_slope, probability_feasible, risk_class
from inference.c2.sections import mask_width_mm, min_feret, unit
from inference.c2.settings import C2Settings
from inference.errors import InferenceError
from inference.phantom.shapes import Ellipsoid, EllipticTube, frame
from inference.results import MPDKind, Risk, Side

CORTEX_HU, MARROW_HU, SOFT_HU = 1300.0, 250.0, 40.0


def tube_volume(
    width: float,
    height: float,
    axis: tuple[float, float, float],
    spacing: tuple[float, float, float],
    cortex: float = 1.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A waisted elliptic tube (isthmus ``width × height`` at ``centre``) between two bulbs,
    cortex over marrow, partial-volume averaged on a grid ``[slice, row, col]`` → LPS."""
    centre = np.array([2.0, -3.0, 4.0])
    d = unit(axis)
    rot = frame(np.cross(d, [0.3, 0.2, 0.9]), np.cross(d, np.cross(d, [0.3, 0.2, 0.9])))
    rot = np.stack([rot[:, 0], rot[:, 1], d], axis=1)
    outer = EllipticTube(centre, rot, width / 2, height / 2, -9.0, 9.0, flat=1.5, flare=0.45)
    inner = EllipticTube(centre, rot, width / 2 - cortex, height / 2 - cortex, -9.0, 9.0, 1.5, 0.45)
    bulbs = [Ellipsoid(centre + s * 9.0 * d, rot, np.array([7.0, 7.0, 5.0])) for s in (-1, 1)]
    fov = 34.0
    shape = tuple(round(fov / s) for s in spacing)
    affine = np.zeros((4, 4))
    affine[2, 0], affine[1, 1], affine[0, 2], affine[3, 3] = spacing[0], spacing[1], spacing[2], 1
    affine[:3, 3] = centre - affine[:3, :3] @ ((np.array(shape) - 1) / 2)
    acc = np.zeros(shape)
    sub = (np.arange(2) + 0.5) / 2 - 0.5
    k, i, j = np.meshgrid(*(np.arange(n, dtype=float) for n in shape), indexing="ij")
    for dk in sub:
        for di in sub:
            for dj in sub:
                idx = np.stack([k + dk, i + di, j + dj], axis=-1).reshape(-1, 3)
                p = idx @ affine[:3, :3].T + affine[:3, 3]
                d_out = np.minimum(outer.sdf(p), np.minimum(bulbs[0].sdf(p), bulbs[1].sdf(p)))
                hu = np.where(d_out < 0, CORTEX_HU, SOFT_HU)
                hu = np.where((inner.sdf(p) < 0) & (np.abs((p - centre) @ d) < 8.0), MARROW_HU, hu)
                acc += hu.reshape(shape)
    return (acc / 8).astype(np.float32), affine, centre


def test_min_feret_of_a_rotated_rectangle_is_its_short_side() -> None:
    xs, ys = np.meshgrid(np.linspace(-3.5, 3.5, 50), np.linspace(-1.5, 1.5, 30))
    pts = np.stack([xs.ravel(), ys.ravel()], axis=1)
    c, s = math.cos(0.5), math.sin(0.5)
    width, direction = min_feret(pts @ np.array([[c, s], [-s, c]]))
    assert width == pytest.approx(3.0, abs=1e-9)
    assert abs(direction @ np.array([-s, c])) == pytest.approx(1.0, abs=1e-9)


def test_min_feret_of_a_triangle_is_its_smallest_altitude() -> None:
    tri = np.array([[0.0, 0.0], [6.0, 0.0], [0.0, 3.0]])
    assert min_feret(tri)[0] == pytest.approx(6.0 * 3.0 / math.hypot(6.0, 3.0), abs=1e-9)


def test_mask_width_of_a_pixelised_ellipse() -> None:
    yy, xx = np.mgrid[-60:61, -60:61] * 0.1
    mask = (xx / 2.4) ** 2 + (yy / 4.0) ** 2 <= 1.0
    assert mask_width_mm(mask, 0.1)[0] == pytest.approx(4.8, abs=0.1)


@pytest.mark.parametrize(
    ("width", "height", "axis", "spacing"),
    [
        (4.0, 8.5, (0.45, -0.75, 0.35), (1.0, 0.5, 0.5)),
        (6.2, 9.0, (-0.5, -0.8, 0.3), (0.5, 0.6, 0.6)),
        (3.2, 7.0, (0.2, 0.3, 0.93), (1.0, 0.4, 0.4)),
    ],
)
def test_mpd_of_a_tilted_waisted_tube(
    width: float, height: float, axis: tuple[float, float, float], spacing: tuple[float, ...]
) -> None:
    hu, affine, centre = tube_volume(width, height, axis, spacing)  # type: ignore[arg-type]
    true_axis = unit(axis)
    off_axis = unit(true_axis + 0.12 * np.cross(true_axis, [0.0, 0.0, 1.0]))
    seed = centre + 1.0 * true_axis + 0.4 * np.cross(true_axis, [1.0, 0.0, 0.0])
    m = measure_mpd(Scan(hu, affine, C2Settings(), CORTEX_HU), seed, off_axis)
    assert m is not None
    assert m.kind is MPDKind.OUTER and m.mpd_mm == m.outer_mm
    assert m.mpd_mm == pytest.approx(width, abs=0.25)
    assert abs((m.location - centre) @ true_axis) <= 2.0  # in the waist (flat ±1.5 mm)
    assert np.linalg.norm(np.cross(m.location - centre, true_axis)) <= 0.5  # on the axis
    assert math.degrees(math.acos(min(1.0, abs(float(m.axis @ true_axis))))) <= 8.0
    assert not m.clipped


def test_endosteal_width_is_inside_the_cortex() -> None:
    hu, affine, centre = tube_volume(6.0, 8.0, (0.0, -0.6, 0.8), (0.5, 0.5, 0.5), cortex=1.0)
    settings = C2Settings(mpd_kind=MPDKind.ENDOSTEAL)
    m = measure_mpd(Scan(hu, affine, settings, CORTEX_HU), centre, (0.0, -0.6, 0.8))
    assert m is not None and m.kind is MPDKind.ENDOSTEAL
    assert m.mpd_mm == m.endosteal_mm
    assert m.endosteal_mm == pytest.approx(4.0, abs=0.5)
    assert m.outer_mm == pytest.approx(6.0, abs=0.3)


def test_a_tube_right_at_the_cut_off_is_uncertain() -> None:
    hu, affine, centre = tube_volume(4.78, 8.0, (0.4, -0.8, 0.4), (1.0, 0.5, 0.5))
    m = measure_mpd(Scan(hu, affine, C2Settings(), CORTEX_HU), centre, (0.4, -0.8, 0.4))
    assert m is not None and m.mpd_mm == pytest.approx(4.78, abs=0.25)
    p = probability_feasible(m.mpd_mm, 4.78, 1.0)
    assert 0.05 < p < 0.95  # the measurement cannot tell which side of 4.78 mm it is on


def test_risk_and_probability_at_the_cut_off() -> None:
    assert risk_class(4.78, 4.78) is Risk.LOW  # MPD ≥ 4.78 mm is low risk
    assert risk_class(4.7799, 4.78) is Risk.HIGH
    assert probability_feasible(4.78, 4.78, 1.0) == pytest.approx(0.5)
    grid = [probability_feasible(x, 4.78, 1.0) for x in np.linspace(2.0, 8.0, 25)]
    assert all(a < b for a, b in itertools.pairwise(grid))
    assert probability_feasible(5.5, 4.78, 0.5) > 0.99
    assert probability_feasible(4.0, 4.78, 0.5) < 0.01
    # coarser voxels: the same measurement is less certain
    assert logistic_slope(2.0) < logistic_slope(1.0) < logistic_slope(0.5)
    assert probability_feasible(5.0, 4.78, 2.0) < probability_feasible(5.0, 4.78, 0.5)


def test_settings_are_validated() -> None:
    with pytest.raises(InferenceError, match="step_mm"):
        C2Settings(step_mm=0.0)
    with pytest.raises(InferenceError, match="unknown C2 settings"):
        C2Settings.from_mapping({"cut_off": 4.3})
    assert C2Settings.from_mapping({"cutoff_mm": 4.3, "mpd_kind": "endosteal"}).mpd_kind is (
        MPDKind.ENDOSTEAL
    )


def test_left_and_right_in_lps() -> None:
    # LPS +x is patient left; the C2 frame's left = cranial × anterior.
    cranial, anterior = np.array([0.0, 0.0, 1.0]), np.array([0.0, -1.0, 0.0])
    upright = C2Frame(np.zeros(3), cranial, anterior, np.cross(cranial, anterior))
    assert np.allclose(upright.left, [1.0, 0.0, 0.0])
    assert side_of((12.0, 5.0, 0.0), upright) is Side.LEFT
    assert side_of((-12.0, 5.0, 0.0), upright) is Side.RIGHT
    # a head turned 90° to its left: its left side now points posterior (LPS +y)
    turned = C2Frame(np.zeros(3), cranial, np.array([1.0, 0.0, 0.0]), np.zeros(3))
    turned = C2Frame(turned.origin, cranial, turned.anterior, np.cross(cranial, turned.anterior))
    assert np.allclose(turned.left, [0.0, 1.0, 0.0])
    assert side_of((0.0, 10.0, 0.0), turned) is Side.LEFT


def test_a_volume_without_c2_gives_a_warning_not_an_error() -> None:
    hu = np.full((40, 60, 60), 40.0, dtype=np.float32)
    hu[10:30, 20:40, 20:40] = 1200.0  # a bone block: no dens, no C2
    result = assess_c2(hu, np.diag([1.0, 1.0, 1.0, 1.0]))
    assert result.findings == ()
    assert any("no C2" in w for w in result.warnings)


def test_thick_slices_give_a_warning_not_a_number() -> None:
    hu = np.zeros((10, 20, 20), dtype=np.float32)
    result = assess_c2(hu, np.diag([4.0, 0.5, 0.5, 1.0]))
    assert result.findings == ()
    assert any("4.00 mm is coarser" in w for w in result.warnings)

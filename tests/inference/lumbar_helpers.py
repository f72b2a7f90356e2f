"""An analytic vertebra for planning tests: body cylinder, two pedicle tubes, a lamina."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial.transform import Rotation

from inference.geometry import Frame, unit


@dataclass(frozen=True)
class AnalyticVertebra:
    mask: npt.NDArray[np.bool_]
    affine: npt.NDArray[np.float64]
    frame: Frame
    pta_deg: float
    psa_deg: float
    pedicle_radius: float
    isthmus: dict[str, npt.NDArray[np.float64]]


def _to_local(frame: Frame, pts: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    return frame.to_local(pts)


def _tube(
    local: npt.NDArray[np.float64],
    p0: np.ndarray,
    d: np.ndarray,
    r: float,
    *,
    t0: float,
    t1: float,
    tall: float = 1.0,
    flare: float = 0.3,
) -> np.ndarray:
    """An hourglass tube along ``d`` through ``p0``; ``tall`` stretches its section along the
    local cranial axis (a pedicle taller than wide)."""
    rel = local - p0
    t = rel @ d
    radial = rel - t[:, None] * d
    up = np.array([0.0, 0.0, 1.0]) - d[2] * d
    up /= np.linalg.norm(up)
    h = radial @ up
    w = np.linalg.norm(radial - h[:, None] * up, axis=1)
    widen = flare * np.maximum(np.abs(t) - 2.0, 0.0)  # an hourglass: the isthmus is at p0
    return (np.hypot(w, h / tall) <= r + widen) & (t >= t0) & (t <= t1)


def make_vertebra(
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    pta_deg: float = 15.0,
    psa_deg: float = 0.0,
    pedicle_radius: float = 4.5,
    spacing: float = 1.0,
    *,
    pedicle_tall: float = 1.0,
    pedicle_flare: float = 0.3,
) -> AnalyticVertebra:
    """A vertebra whose frame is LPS rotated by ``rotation_deg`` (xyz Euler), on a grid (LPS)."""
    rot = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    # Unrotated: r = patient right = -x (LPS), a = anterior = -y, s = +z.
    r, a, s = (
        rot @ np.array([-1.0, 0, 0]),
        rot @ np.array([0, -1.0, 0]),
        rot @ np.array([0, 0, 1.0]),
    )
    frame = Frame(np.zeros(3), r, a, s)
    n = round(110 / spacing)
    affine = np.diag([spacing, spacing, spacing, 1.0])
    affine[:3, 3] = -55.0
    # index (i, j, k) -> (x, y, z) = affine; make slice axis = z: permute columns
    affine[:3, :3] = np.array([[0, 0, spacing], [0, spacing, 0], [spacing, 0, 0]])
    idx = np.indices((n, n, n)).reshape(3, -1).T.astype(np.float64)
    pts = idx @ affine[:3, :3].T + affine[:3, 3]
    loc = _to_local(frame, pts)
    lr, la, ls = loc[:, 0], loc[:, 1], loc[:, 2]
    body = ((lr / 22.0) ** 2 + (la / 16.0) ** 2 <= 1.0) & (np.abs(ls) <= 13.0)
    lamina = (np.abs(lr) <= 22.0) & (la >= -40.0) & (la <= -32.0) & (np.abs(ls) <= 7.0)
    mask = body | lamina
    isthmus: dict[str, np.ndarray] = {}
    for name, sign in (("left", -1.0), ("right", 1.0)):
        medial = np.array([-sign, 0.0, 0.0])
        d = unit(
            np.array([0.0, 1.0, 0.0])
            + np.tan(np.radians(pta_deg)) * medial
            + np.tan(np.radians(psa_deg)) * np.array([0.0, 0.0, 1.0])
        )
        p0 = np.array([sign * 16.0, -23.0, 0.0])
        mask |= _tube(
            loc, p0, d, pedicle_radius, t0=-14.0, t1=12.0, tall=pedicle_tall, flare=pedicle_flare
        )
        isthmus[name] = frame.to_patient(p0)[0]
    return AnalyticVertebra(
        mask.reshape(n, n, n), affine, frame, pta_deg, psa_deg, pedicle_radius, isthmus
    )


@dataclass(frozen=True)
class PedicleTube:
    """A 1 mm elliptic pedicle tube (4 × 7 mm semi-axes, |t| ≤ 20 mm) along PTA 15° and a given
    PSA in the frame r = x, a = y, s = z (mm) on a 60³ grid centred on the isthmus, with each
    voxel's coordinates along the axis (t), across it transversely (u) and vertically (v), for
    tests to add bone around it. ``mask`` is flat (``shape`` gives the grid)."""

    mask: npt.NDArray[np.bool_]
    affine: npt.NDArray[np.float64]
    shape: tuple[int, int, int]
    axis: npt.NDArray[np.float64]
    frame: Frame
    t: npt.NDArray[np.float64]
    u: npt.NDArray[np.float64]
    v: npt.NDArray[np.float64]


def pedicle_tube(psa_deg: float) -> PedicleTube:
    shape = (60, 60, 60)
    affine = np.eye(4)
    affine[:3, :3] = np.eye(3)[:, ::-1]
    affine[:3, 3] = -30.0
    idx = np.indices(shape).reshape(3, -1).T.astype(np.float64)
    p = idx @ affine[:3, :3].T + affine[:3, 3]
    r, a, s = np.eye(3)
    d = unit(a + np.tan(np.radians(15.0)) * r + np.tan(np.radians(psa_deg)) * s)
    w = unit(np.cross(s, d))
    t, u, v = p @ d, p @ w, p @ np.cross(d, w)
    mask = ((u / 4.0) ** 2 + (v / 7.0) ** 2 <= 1.0) & (np.abs(t) <= 20.0)
    return PedicleTube(mask, affine, shape, d, Frame(np.zeros(3), r, a, s), t, u, v)

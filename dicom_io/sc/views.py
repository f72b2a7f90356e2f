"""The secondary-capture views: per level, overview, C2 isthmus slices.

All geometry is in the DICOM LPS patient frame (mm): +x patient left, +y posterior, +z superior.
Views follow the radiological convention: axial images show patient left on the image right and
anterior at the top; sagittal images show anterior on the left and superior at the top.
"""

from __future__ import annotations

import textwrap
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw

from dicom_io.report import AnalysisReport, ReportC2, ReportScrew
from dicom_io.sc.render import RGB, Canvas, FloatArray, Plane, Segment3D, draw_panel, sample, unit
from dicom_io.volume import CTVolume

LEFT = np.array([1.0, 0.0, 0.0])
POSTERIOR = np.array([0.0, 1.0, 0.0])
SUPERIOR = np.array([0.0, 0.0, 1.0])
LEVEL_PIXEL_MM = 0.3
C2_PIXEL_MM = 0.08
C2_FIELD_PX = 300
C2_SLICE_STEP_MM = 1.0  # C2-Net: 5 consecutive slices resampled to 1 mm
WRAP_CHARS = 110
SIDE_COLORS: dict[str, RGB] = {"left": (255, 0, 0), "right": (0, 255, 255)}
RISK_COLORS: dict[str, RGB] = {"low": (0, 255, 0), "high": (255, 0, 0)}


@dataclass(frozen=True, slots=True)
class NumberedScrew:
    """A screw and its number on every image (1-based, in report order)."""

    number: int
    screw: ReportScrew

    def segment(self) -> Segment3D:
        return Segment3D(
            self.screw.entry_mm,
            self.screw.tip_mm,
            self.screw.diameter_mm,
            SIDE_COLORS[self.screw.side],
            str(self.number),
        )

    def line(self) -> str:
        s = self.screw
        direction = f" {s.breach_direction}" if s.breach_direction else ""
        return (
            f"{self.number}: {s.level} {s.side}  {s.length_mm:.0f} x {s.diameter_mm:.1f} mm"
            f"  channel {s.channel_mm:.1f} mm  PTA {s.pta_deg:.1f} deg  PSA {s.psa_deg:.1f} deg"
            f"  GR {s.gr_grade} (breach {s.breach_mm:.1f} mm{direction})  Babu {s.babu_grade}"
        )


def numbered(report: AnalysisReport) -> list[NumberedScrew]:
    return [NumberedScrew(i + 1, s) for i, s in enumerate(report.screws)]


def _points(screws: Sequence[NumberedScrew]) -> FloatArray:
    return np.array([p for n in screws for p in (n.screw.entry_mm, n.screw.tip_mm)], dtype=float)


def _direction(screws: Sequence[NumberedScrew]) -> FloatArray:
    """Mean entry → tip direction (roughly anterior)."""
    d = sum(unit(np.subtract(n.screw.tip_mm, n.screw.entry_mm)) for n in screws)
    return unit(np.asarray(d, dtype=float))


def _panel(
    volume: CTVolume, plane: Plane, screws: Sequence[NumberedScrew]
) -> npt.NDArray[np.uint8]:
    values = sample(volume.hu, np.asarray(volume.affine, dtype=np.float64), plane)
    return draw_panel(values, plane, [n.segment() for n in screws])


def perpendicular(to: npt.ArrayLike, *candidates: npt.ArrayLike) -> FloatArray:
    """Unit vector ⊥ ``to`` from the first candidate not (nearly) parallel to it."""
    t = unit(to)
    for candidate in (*candidates, LEFT, POSTERIOR, SUPERIOR):
        c = np.asarray(candidate, dtype=np.float64)
        rest = c - np.dot(c, t) * t
        if np.linalg.norm(rest) > 0.1 * max(float(np.linalg.norm(c)), 1e-9):
            return unit(rest)
    raise ValueError("no perpendicular found")  # unreachable: LEFT, POSTERIOR, SUPERIOR span 3-D


def axial_oblique_plane(screws: Sequence[NumberedScrew]) -> Plane:
    """The plane through the level's screws: spanned by their mean direction and the line between
    the two entries (patient left for a single screw). u runs towards patient left within that
    plane and v (⊥ u) posterior, so each screw shows its transverse angle."""
    d = _direction(screws)
    by_side = {n.screw.side: np.asarray(n.screw.entry_mm) for n in screws}
    raw = by_side["left"] - by_side["right"] if len(by_side) == 2 else LEFT
    if np.linalg.norm(np.cross(unit(raw), d)) < 0.1:  # nearly along the screws: no plane
        raw = perpendicular(d, np.cross(d, SUPERIOR))
    lateral = unit(raw)
    if np.dot(lateral, LEFT) < 0:
        lateral = -lateral
    down = perpendicular(lateral, -d)
    centre = _points(screws).mean(axis=0)
    return Plane.through(centre, lateral, down, (360, 300), LEVEL_PIXEL_MM)


def sagittal_oblique_plane(screw: ReportScrew) -> Plane:
    """The plane through one screw's axis and the cranial direction: anterior left, superior up."""
    d = unit(np.subtract(screw.tip_mm, screw.entry_mm))
    centre = (np.asarray(screw.entry_mm) + np.asarray(screw.tip_mm)) / 2.0
    down = perpendicular(d, -SUPERIOR, POSTERIOR)
    return Plane.through(centre, -d, down, (300, 300), LEVEL_PIXEL_MM)


def level_canvas(volume: CTVolume, level: str, screws: Sequence[NumberedScrew]) -> Canvas:
    """Axial oblique along the level's screws, then a sagittal oblique through each screw."""
    canvas = Canvas(header=[f"{level}: planned pedicle screws", *(n.line() for n in screws)])
    plane = axial_oblique_plane(screws)
    canvas.add(_panel(volume, plane, screws), plane)
    for n in screws:
        sag = sagittal_oblique_plane(n.screw)
        canvas.add(_panel(volume, sag, [n]), sag)
    canvas.footer = ["axial oblique along the screws | sagittal oblique through each screw"]
    return canvas


def _extent(volume: CTVolume) -> tuple[FloatArray, FloatArray]:
    """Lowest and highest LPS coordinates of the volume's voxel centres."""
    s, r, c = (n - 1 for n in volume.shape)
    corners = np.array([[i, j, k, 1.0] for i in (0, s) for j in (0, r) for k in (0, c)])
    lps = corners @ np.asarray(volume.affine, dtype=np.float64).T
    return lps[:, :3].min(axis=0), lps[:, :3].max(axis=0)


def _clip(values: FloatArray, margin: float, bounds: tuple[float, float]) -> tuple[float, float]:
    """``values``' range widened by ``margin`` and clipped to ``bounds`` (kept non-empty)."""
    lo = max(float(values.min()) - margin, bounds[0])
    hi = min(float(values.max()) + margin, bounds[1])
    if hi - lo < 2 * margin:  # screws outside the scan: keep their own range
        lo, hi = float(values.min()) - margin, float(values.max()) + margin
    return lo, hi


def overview_canvas(
    volume: CTVolume, screws: Sequence[NumberedScrew], warnings: Sequence[str] = ()
) -> Canvas:
    """A sagittal reformat through all screws (projected), with every screw's numbers listed and
    the analysis warnings (e.g. transitional anatomy) burnt in below."""
    points = _points(screws)
    centre = points.mean(axis=0)
    # the screws' extent plus a margin, clipped to the CT (no empty band beyond the scan)
    low, high = _extent(volume)
    y0, y1 = _clip(points @ POSTERIOR, 60.0, (low[1], high[1]))
    z0, z1 = _clip(points @ SUPERIOR, 40.0, (low[2], high[2]))
    centre[1], centre[2] = (y0 + y1) / 2.0, (z0 + z1) / 2.0
    pixel = max(LEVEL_PIXEL_MM, (y1 - y0) / 500.0, (z1 - z0) / 600.0)
    size = (max(round((y1 - y0) / pixel), 1), max(round((z1 - z0) / pixel), 1))
    plane = Plane.through(centre, POSTERIOR, -SUPERIOR, size, pixel)
    canvas = Canvas(header=["Overview: all planned pedicle screws", *(n.line() for n in screws)])
    canvas.add(_panel(volume, plane, screws), plane)
    notes = [line for w in warnings for line in textwrap.wrap(f"warning: {w}", WRAP_CHARS)]
    canvas.footer = ["sagittal reformat, screws projected; numbers as listed above", *notes]
    return canvas


def c2_planes(finding: ReportC2) -> list[Plane]:
    """Five cross-sections ⊥ the pedicle axis, 1 mm apart, centred on the narrowest one."""
    a = unit(finding.axis_mm)
    u = perpendicular(a, LEFT, POSTERIOR)
    v = perpendicular(u, perpendicular(a, -SUPERIOR, POSTERIOR))
    v = unit(v - np.dot(v, a) * a)
    centre = np.asarray(finding.location_mm, dtype=float)
    return [
        Plane.through(
            centre + k * C2_SLICE_STEP_MM * a, u, v, (C2_FIELD_PX, C2_FIELD_PX), C2_PIXEL_MM
        )
        for k in range(-2, 3)
    ]


def c2_frames(volume: CTVolume, finding: ReportC2) -> list[npt.NDArray[np.uint8]]:
    """The five isthmus slices of one side, each with MPD, risk and probability burnt in."""
    frames = []
    affine = np.asarray(volume.affine, dtype=np.float64)
    for k, plane in enumerate(c2_planes(finding)):
        panel = draw_panel(sample(volume.hu, affine, plane), plane, [])
        image = Image.fromarray(panel)
        draw = ImageDraw.Draw(image)
        r = finding.mpd_mm / 2.0 / plane.pixel_mm
        cy, cx = (plane.height - 1) / 2.0, (plane.width - 1) / 2.0
        draw.ellipse([cx - r, cy - r, cx + r, cy + r], outline=RISK_COLORS[finding.risk], width=2)
        canvas = Canvas(
            header=[
                f"C2 {finding.side} pedicle: isthmus slice {k + 1}/5"
                f" ({(k - 2) * C2_SLICE_STEP_MM:+.0f} mm along the axis)",
                f"MPD {finding.mpd_mm:.2f} mm ({finding.mpd_kind} width)"
                f"  risk {finding.risk.upper()}  p(feasible) {finding.probability_feasible:.2f}",
                f"method: {finding.method}; circle = MPD at the narrowest section",
            ]
        )
        canvas.add(np.asarray(image, dtype=np.uint8), plane)
        frames.append(canvas.render(min_width=420))
    return frames


def levels(screws: Sequence[NumberedScrew]) -> dict[str, list[NumberedScrew]]:
    """Screws grouped by level, in report order."""
    out: dict[str, list[NumberedScrew]] = {}
    for n in screws:
        out.setdefault(n.screw.level, []).append(n)
    return out

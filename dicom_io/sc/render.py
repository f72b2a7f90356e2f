"""Render reformatted CT planes as RGB images with screws and text burnt in (numpy + Pillow).

A :class:`Plane` is a grid of pixels in the DICOM LPS patient frame (mm): pixel ``(row, col)`` lies
at ``origin + (col - (width - 1) / 2) * pixel_mm * u + (row - (height - 1) / 2) * pixel_mm * v``.
The CT is sampled there by trilinear interpolation through the volume affine (index ``(slice, row,
column)`` → LPS). :class:`Canvas` stacks panels under a header band and above a footer band and
remembers where each panel went, so a point in mm can be projected to its pixel in the final image.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import cache

import numpy as np
import numpy.typing as npt
from PIL import Image, ImageDraw, ImageFont
from scipy import ndimage

from dicom_io.derived import DISCLAIMER

RGB = tuple[int, int, int]
FloatArray = npt.NDArray[np.float64]

WINDOW_CENTER_HU = 300.0
WINDOW_WIDTH_HU = 1500.0
TEXT_COLOR: RGB = (255, 255, 255)
WARNING_COLOR: RGB = (255, 220, 0)
SCREW_COLORS: tuple[RGB, ...] = ((255, 0, 0), (0, 255, 255), (255, 0, 255), (0, 255, 0))
FONT_SIZE = 13
LINE_HEIGHT = 17


@cache
def font() -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled font: the same glyphs on every machine with the same Pillow."""
    return ImageFont.load_default(size=FONT_SIZE)


def unit(vector: npt.ArrayLike) -> FloatArray:
    """``vector`` scaled to length 1 (returned unchanged if it is zero)."""
    v = np.asarray(vector, dtype=np.float64)
    n = float(np.linalg.norm(v))
    return v / n if n > 0 else v


@dataclass(frozen=True, slots=True)
class Plane:
    """A rectangular grid of pixels in LPS mm; ``u`` runs along a row, ``v`` down a column."""

    origin: tuple[float, float, float]
    u: tuple[float, float, float]
    v: tuple[float, float, float]
    pixel_mm: float
    width: int
    height: int

    @classmethod
    def through(
        cls,
        centre: npt.ArrayLike,
        u: npt.ArrayLike,
        v: npt.ArrayLike,
        size: tuple[int, int],
        pixel_mm: float,
    ) -> Plane:
        """Plane centred at ``centre``; ``v`` is made orthogonal to ``u``. ``size`` = (w, h)."""
        uu = unit(u)
        vv = unit(np.asarray(v, dtype=np.float64) - np.dot(v, uu) * uu)
        c = np.asarray(centre, dtype=np.float64)
        return cls(_t(c), _t(uu), _t(vv), float(pixel_mm), int(size[0]), int(size[1]))

    def points(self) -> FloatArray:
        """LPS mm of every pixel centre, shape ``(height, width, 3)``."""
        cols = (np.arange(self.width) - (self.width - 1) / 2.0) * self.pixel_mm
        rows = (np.arange(self.height) - (self.height - 1) / 2.0) * self.pixel_mm
        o, u, v = (np.asarray(x) for x in (self.origin, self.u, self.v))
        grid: FloatArray = o + cols[None, :, None] * u + rows[:, None, None] * v
        return grid

    def project(self, point_mm: npt.ArrayLike) -> tuple[float, float]:
        """(row, col) of the orthogonal projection of ``point_mm`` onto the plane."""
        d = np.asarray(point_mm, dtype=np.float64) - np.asarray(self.origin)
        col = float(np.dot(d, self.u)) / self.pixel_mm + (self.width - 1) / 2.0
        row = float(np.dot(d, self.v)) / self.pixel_mm + (self.height - 1) / 2.0
        return (row, col)


def _t(v: FloatArray) -> tuple[float, float, float]:
    return (float(v[0]), float(v[1]), float(v[2]))


def sample(hu: npt.NDArray[np.floating], affine: FloatArray, plane: Plane) -> FloatArray:
    """HU on ``plane`` by trilinear interpolation; outside the volume reads -1024 HU."""
    pts = plane.points().reshape(-1, 3)
    inverse = np.linalg.inv(affine)
    index = pts @ inverse[:3, :3].T + inverse[:3, 3]
    values = ndimage.map_coordinates(hu, index.T, order=1, mode="constant", cval=-1024.0)
    return np.asarray(values, dtype=np.float64).reshape(plane.height, plane.width)


def to_rgb(values: FloatArray) -> npt.NDArray[np.uint8]:
    """Grey RGB of ``values`` in the bone window (centre 300 HU, width 1500 HU)."""
    low = WINDOW_CENTER_HU - WINDOW_WIDTH_HU / 2.0
    grey = np.clip((values - low) / WINDOW_WIDTH_HU * 255.0, 0.0, 255.0)
    g = np.rint(grey).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


@dataclass(frozen=True, slots=True)
class Segment3D:
    """A screw (or axis) to draw: from ``start`` to ``end`` in LPS mm, ``width_mm`` thick."""

    start: tuple[float, float, float]
    end: tuple[float, float, float]
    width_mm: float
    color: RGB
    label: str


def draw_panel(
    values: FloatArray, plane: Plane, segments: Sequence[Segment3D]
) -> npt.NDArray[np.uint8]:
    """The windowed plane with each segment drawn as its projection and labelled at its tip."""
    image = Image.fromarray(to_rgb(values))
    draw = ImageDraw.Draw(image)
    for seg in segments:
        (r0, c0), (r1, c1) = plane.project(seg.start), plane.project(seg.end)
        width = max(1, round(seg.width_mm / plane.pixel_mm))
        draw.line([(c0, r0), (c1, r1)], fill=seg.color, width=width)
        # the number goes just beyond the tip, along the screw, clear of the drawn shaft
        dr, dc = r1 - r0, c1 - c0
        norm = max(float(np.hypot(dr, dc)), 1e-6)
        gap = width / 2 + FONT_SIZE
        anchor = (c1 + dc / norm * gap, r1 + dr / norm * gap)
        draw.text(anchor, seg.label, fill=seg.color, font=font(), anchor="mm")
    return np.asarray(image, dtype=np.uint8)


@dataclass
class Canvas:
    """Panels side by side between a text header and the disclaimer footer."""

    header: Sequence[str]
    panels: list[tuple[npt.NDArray[np.uint8], Plane]] = field(default_factory=list)
    footer: Sequence[str] = ()

    def add(self, pixels: npt.NDArray[np.uint8], plane: Plane) -> None:
        self.panels.append((pixels, plane))

    @property
    def header_height(self) -> int:
        return LINE_HEIGHT * len(self.header) + 6

    def offsets(self) -> list[tuple[int, int]]:
        """(row, col) of each panel's top-left corner in the final image."""
        out, col = [], 0
        for pixels, _ in self.panels:
            out.append((self.header_height, col))
            col += pixels.shape[1]
        return out

    def project(self, panel: int, point_mm: npt.ArrayLike) -> tuple[int, int]:
        """Pixel (row, col) in the final image of ``point_mm`` projected onto panel ``panel``."""
        row, col = self.panels[panel][1].project(point_mm)
        r0, c0 = self.offsets()[panel]
        return (round(row) + r0, round(col) + c0)

    def render(self, min_width: int = 0) -> npt.NDArray[np.uint8]:
        """The final RGB image, ``(rows, columns, 3)`` uint8."""
        footer = [*self.footer, DISCLAIMER]
        text_width = max(font().getlength(line) for line in [*self.header, *footer]) + 8
        width = max(min_width, sum(p.shape[1] for p, _ in self.panels), int(np.ceil(text_width)))
        body = max((p.shape[0] for p, _ in self.panels), default=0)
        height = self.header_height + body + LINE_HEIGHT * len(footer) + 6
        out = np.zeros((height, width, 3), dtype=np.uint8)
        for (pixels, _), (r0, c0) in zip(self.panels, self.offsets(), strict=True):
            out[r0 : r0 + pixels.shape[0], c0 : c0 + pixels.shape[1]] = pixels
        image = Image.fromarray(out)
        draw = ImageDraw.Draw(image)
        for i, line in enumerate(self.header):
            draw.text((4, 3 + i * LINE_HEIGHT), line, fill=TEXT_COLOR, font=font())
        top = self.header_height + body + 3
        for i, line in enumerate(footer):
            color = WARNING_COLOR if line == DISCLAIMER else TEXT_COLOR
            draw.text((4, top + i * LINE_HEIGHT), line, fill=color, font=font())
        return np.asarray(image, dtype=np.uint8)

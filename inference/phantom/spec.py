"""Phantom parameters and their seeded randomisation within published ranges.

All lengths are millimetres and all angles degrees. Vertebra-frame conventions (ALGORITHMS.md):
``s`` cranial, ``a`` anterior, ``r`` = a × s (patient right).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import numpy as np

from inference.errors import InferenceError


class PhantomKind(StrEnum):
    LUMBAR = "lumbar"
    CERVICAL = "cervical"
    FULL = "full"


@dataclass(frozen=True, slots=True)
class VertebraParams:
    """Size and pedicle geometry of one thoracolumbar/sacral vertebra (mm, degrees).

    Pedicle angles are relative to the vertebra frame: ``pta_deg`` medial (convergent) angulation
    of the pedicle axis, ``psa_deg`` cranial tilt, as defined in ALGORITHMS.md.
    """

    level: str
    body_width: float
    body_depth: float
    body_height: float
    pedicle_width: float
    pedicle_height: float
    pta_deg: float
    psa_deg: float
    canal_width: float
    canal_depth: float
    tp_length: float
    facet_angle_deg: float
    cortex_mm: float
    disc_below: float
    pedicle_asymmetry: float = 0.0

    def pedicle_width_of(self, side: str) -> float:
        """Pedicle width of ``side``: the level's width ± half the right-minus-left asymmetry."""
        sign = 1.0 if side == "right" else -1.0
        return max(self.pedicle_width + sign * self.pedicle_asymmetry / 2, 3.0)


@dataclass(frozen=True, slots=True)
class C2Params:
    """The C2 pediculoisthmic components (per side: index 0 = left, 1 = right)."""

    outer_width: tuple[float, float]
    height: tuple[float, float]
    cortex_mm: tuple[float, float]
    medial_deg: tuple[float, float]
    cranial_deg: tuple[float, float]


# Approximate means after Zindrick 1987 / Panjabi 1992 / Ebraheim 1997 (pedicles) and CT series
# (bodies), written from memory of those papers, not re-checked: plausible, not citations.
# level: body w, d, h, pedicle w, h, PTA, PSA, canal w, d, transverse process, facet angle, disc
_LUMBAR_TABLE: dict[str, tuple[float, ...]] = {
    "T12": (40.0, 30.0, 24.0, 7.8, 17.0, 8.0, 1.0, 20.0, 17.0, 8.0, 15.0, 7.0),
    "L1": (42.0, 32.0, 25.0, 8.7, 15.4, 11.0, 2.0, 22.0, 17.0, 15.0, 25.0, 9.0),
    "L2": (44.0, 33.0, 26.0, 8.9, 15.0, 12.0, 2.0, 22.5, 16.0, 18.0, 28.0, 10.0),
    "L3": (47.0, 34.0, 27.0, 10.3, 14.9, 14.4, 0.0, 23.0, 15.5, 22.0, 35.0, 11.0),
    "L4": (49.0, 35.0, 27.0, 12.9, 14.8, 17.7, 0.0, 24.0, 15.5, 20.0, 42.0, 11.5),
    "L5": (51.0, 35.0, 26.0, 16.0, 14.0, 24.0, -2.0, 26.0, 16.0, 18.0, 48.0, 10.0),
    "L6": (51.0, 35.0, 26.0, 16.0, 14.0, 26.0, -2.0, 26.0, 16.0, 18.0, 48.0, 10.0),
    "S1": (52.0, 34.0, 25.0, 17.0, 19.0, 36.0, 0.0, 28.0, 14.0, 0.0, 50.0, 0.0),
}

# Thoracic levels (kind "full"): approximate, after Panjabi 1991 / Zindrick 1987 (from memory).
_THORACIC_TABLE: dict[str, tuple[float, ...]] = {
    "T1": (28.0, 17.0, 14.0, 7.5, 9.5, 27.0, 0.0, 18.0, 14.0, 18.0, 70.0, 4.0),
    "T2": (30.0, 18.0, 15.0, 6.0, 11.0, 20.0, 0.0, 17.0, 14.0, 18.0, 70.0, 4.0),
    "T3": (31.0, 19.0, 16.0, 5.0, 11.5, 14.0, 0.0, 16.0, 14.0, 18.0, 70.0, 4.0),
    "T4": (32.0, 20.0, 16.5, 4.8, 11.5, 11.0, 0.0, 16.0, 14.0, 17.0, 70.0, 4.5),
    "T5": (32.0, 21.0, 17.0, 5.0, 11.5, 10.0, 0.0, 16.0, 14.0, 17.0, 70.0, 4.5),
    "T6": (33.0, 22.0, 17.5, 5.2, 12.0, 9.0, 0.0, 16.0, 14.0, 17.0, 70.0, 5.0),
    "T7": (34.0, 23.0, 18.0, 5.5, 12.5, 8.0, 0.0, 16.0, 14.0, 16.0, 70.0, 5.0),
    "T8": (35.0, 24.0, 19.0, 5.8, 13.0, 8.0, 0.0, 16.0, 14.0, 16.0, 70.0, 5.0),
    "T9": (36.0, 26.0, 20.0, 6.2, 14.0, 7.0, 0.0, 17.0, 15.0, 15.0, 65.0, 5.5),
    "T10": (37.0, 27.0, 21.0, 6.6, 15.0, 6.0, 0.0, 17.0, 15.0, 13.0, 60.0, 6.0),
    "T11": (39.0, 28.0, 22.0, 7.5, 16.5, 5.0, 0.0, 18.0, 16.0, 10.0, 40.0, 6.5),
}

# Segmental lordosis (degrees) of the motion segment below each level [Sci Rep 2022]; thoracic
# kyphosis about 40° over T1–T12 (negative), cervical lordosis about 25° over C2–C7.
SEGMENTAL_LORDOSIS: dict[str, float] = {
    **{f"T{k}": -3.6 for k in range(1, 12)},
    "C1": 6.0,
    "C2": 5.0,
    "C3": 5.0,
    "C4": 5.0,
    "C5": 4.0,
    "C6": 3.0,
    "C7": 0.0,
    "T12": -2.0,
    "L1": 1.0,
    "L2": 6.0,
    "L3": 9.0,
    "L4": 13.0,
    "L5": 22.0,
    "L6": 20.0,
}


@dataclass(frozen=True, slots=True)
class PhantomSpec:
    """Everything that determines a phantom; ``generate(spec)`` is a pure function of it.

    Grid: ``spacing_mm`` and ``shape`` are (slice, row, column); ``None`` shape means "cover the
    anatomy" (``fov_mm`` in-plane, the spine's extent plus a margin along the slices).
    ``oblique_deg`` tilts the acquisition grid about LPS x, y, z.
    """

    seed: int
    kind: PhantomKind
    levels: tuple[VertebraParams, ...]
    c2: C2Params
    spacing_mm: tuple[float, float, float]
    shape: tuple[int, int, int] | None
    fov_mm: float
    centre_offset_mm: tuple[float, float, float]
    centre_mm: tuple[float, float, float] | None
    oblique_deg: tuple[float, float, float]
    sacral_slope_deg: float
    lordosis_scale: float
    scoliosis_deg: float
    axial_rotation_deg: float
    age_years: float
    osteoporosis: bool
    cancellous_hu: float
    cortical_hu: float
    ribs: bool
    osteophytes: bool
    narrowed_disc: str | None
    listhesis_level: str | None
    listhesis_mm: float
    noise_hu: float
    blur_mm: float
    torso_width_mm: float
    torso_depth_mm: float
    fat_mm: float

    @property
    def level_names(self) -> tuple[str, ...]:
        return tuple(v.level for v in self.levels)

    @classmethod
    def from_seed(cls, seed: int, kind: PhantomKind | str, **overrides: Any) -> PhantomSpec:
        """Draw every parameter from ``seed`` within published ranges, then apply ``overrides``.

        Overrides name fields of this class (e.g. ``spacing_mm=(1.0, 0.5, 0.5)``,
        ``shape=(64, 128, 128)``, ``noise_hu=0``; short aliases ``spacing``, ``fov``, ``noise``,
        ``rotation``, ``oblique``, ``centre`` work too); ``include_t12``/``include_l6`` choose
        levels.
        """
        kind = PhantomKind(kind)
        overrides = {_ALIASES.get(k, k): v for k, v in overrides.items()}
        rng = np.random.default_rng([int(seed), 0x5B1E])
        names, include_t12 = _level_names(rng, kind, overrides)
        size = float(rng.normal(1.0, 0.05))
        levels = tuple(_draw_level(rng, n, size) for n in names)
        in_plane = float(rng.uniform(0.3, 1.0))
        # Lumbar lordosis follows the sacral slope (LL ≈ SS + 10°, so L1 leans back ~10°).
        slope = float(rng.normal(39, 7))
        values: dict[str, Any] = {
            "seed": int(seed),
            "kind": kind,
            "levels": levels,
            "c2": _draw_c2(rng),
            "spacing_mm": _default_spacing(rng, kind, in_plane),
            "shape": None,
            "fov_mm": {PhantomKind.CERVICAL: 200.0, PhantomKind.FULL: 460.0}.get(
                kind, float(rng.uniform(300, 420))
            ),
            "centre_offset_mm": tuple(float(v) for v in rng.normal(0, 5, 3)),
            "centre_mm": None,
            "oblique_deg": (0.0, 0.0, 0.0),
            "sacral_slope_deg": slope,
            "lordosis_scale": float(np.clip((slope + rng.normal(10.0, 5.0)) / 51.0, 0.5, 1.5)),
            "scoliosis_deg": float(rng.normal(0, 4)) if rng.random() < 0.3 else 0.0,
            "axial_rotation_deg": float(rng.normal(0, 4)),
            **_bone(rng),
            "ribs": include_t12 and bool(rng.random() < 0.8),
            "narrowed_disc": str(rng.choice(["L4", "L5"])) if rng.random() < 0.3 else None,
            "listhesis_level": str(rng.choice(["L4", "L5"])) if rng.random() < 0.1 else None,
            "listhesis_mm": float(rng.uniform(2.0, 8.0)),
            "noise_hu": float(rng.uniform(8, 30)),
            "blur_mm": float(rng.uniform(0.3, 0.6)),
            "torso_width_mm": float(rng.normal(330, 30)),
            "torso_depth_mm": float(rng.normal(240, 25)),
            "fat_mm": float(rng.uniform(8, 35)),
        }
        unknown = set(overrides) - set(values)
        if unknown:
            raise InferenceError(
                f"unknown phantom parameter(s): {sorted(unknown)}", sorted(unknown)
            )
        values.update(overrides)
        spec = cls(**values)
        spec.validate()
        return spec

    def with_(self, **changes: Any) -> PhantomSpec:
        """A copy with some fields replaced."""
        return dataclasses.replace(self, **changes)

    def validate(self) -> None:
        """Raise :class:`InferenceError` when a parameter is out of its supported range."""
        if any(s <= 0 for s in self.spacing_mm):
            raise InferenceError(
                f"spacing must be positive, got {self.spacing_mm}", self.spacing_mm
            )
        if self.shape is not None and any(int(n) < 1 for n in self.shape):
            raise InferenceError(f"shape must be positive, got {self.shape}", self.shape)
        for w in self.c2.outer_width:
            if not 2.0 <= w <= 10.0:
                raise InferenceError(f"C2 outer width {w} mm outside 2–10 mm", w)


_ALIASES = {
    "spacing": "spacing_mm",
    "fov": "fov_mm",
    "noise": "noise_hu",
    "rotation": "axial_rotation_deg",
    "oblique": "oblique_deg",
    "centre": "centre_mm",
}


def _level_names(
    rng: np.random.Generator, kind: PhantomKind, overrides: dict[str, Any]
) -> tuple[list[str], bool]:
    """Thoracolumbar level names (cranial → caudal) and whether T12 is included."""
    include_t12 = bool(overrides.pop("include_t12", rng.random() < 0.6))
    include_l6 = bool(overrides.pop("include_l6", rng.random() < 0.05))
    if kind == PhantomKind.FULL:
        include_t12 = True
    names = [n for n in _LUMBAR_TABLE if (n != "T12" or include_t12) and (n != "L6" or include_l6)]
    if kind == PhantomKind.FULL:
        names = list(_THORACIC_TABLE) + names
    return names, include_t12


def _bone(rng: np.random.Generator) -> dict[str, Any]:
    """Age, bone density and degeneration: cancellous HU falls with age, osteoporosis 60–110."""
    age = float(rng.uniform(25, 85))
    osteoporosis = bool(age > 60 and rng.random() < 0.4)
    cancellous = float(rng.normal(230 - 2.5 * (age - 25), 30))  # adult range ~100–250 HU
    if osteoporosis:
        cancellous = float(rng.uniform(60, 110))
    return {
        "age_years": age,
        "osteoporosis": osteoporosis,
        "cancellous_hu": float(np.clip(cancellous, 50, 400)),
        "cortical_hu": float(rng.uniform(1000, 1500)),
        "osteophytes": bool(age > 50 and rng.random() < 0.5),
    }


def _default_spacing(
    rng: np.random.Generator, kind: PhantomKind, in_plane: float
) -> tuple[float, float, float]:
    """(slice, row, column) spacing drawn for ``kind``; whole spines get coarser slices."""
    if kind == PhantomKind.FULL:
        fine = float(np.clip(in_plane, 0.7, 1.0))
        return (float(rng.choice([1.25, 2.0, 3.0])), fine, fine)
    return (float(rng.choice([0.5, 0.625, 1.0, 1.25, 2.0, 3.0])), in_plane, in_plane)


def _draw_level(rng: np.random.Generator, name: str, size: float) -> VertebraParams:
    bw, bd, bh, pw, ph, pta, psa, cw, cd, tp, facet, disc = {**_THORACIC_TABLE, **_LUMBAR_TABLE}[
        name
    ]
    s = size * float(rng.normal(1.0, 0.02))
    return VertebraParams(
        level=name,
        body_width=bw * s,
        body_depth=bd * s,
        body_height=bh * s,
        pedicle_width=float(np.clip(rng.normal(pw, 0.12 * pw), min(4.5, 0.8 * pw), 22.0)),
        pedicle_height=float(np.clip(rng.normal(ph, 1.2), 10.0, 24.0)),
        pta_deg=float(rng.normal(pta, 3.0)),
        psa_deg=float(rng.normal(psa, 2.0)),
        canal_width=cw * float(rng.normal(1.0, 0.05)),
        canal_depth=cd * float(rng.normal(1.0, 0.06)),
        tp_length=tp * float(rng.normal(1.0, 0.1)),
        facet_angle_deg=float(rng.normal(facet, 5.0)),
        cortex_mm=float(rng.uniform(1.0, 2.0)),
        disc_below=disc * float(rng.normal(1.0, 0.1)),
        pedicle_asymmetry=float(rng.normal(0.0, 0.06 * pw)),
    )


def _draw_c2(rng: np.random.Generator) -> C2Params:
    width = tuple(float(w) for w in rng.uniform(3.0, 8.0, 2))
    height = tuple(
        float(max(h, w + 2.0)) for h, w in zip(rng.normal(9.0, 1.0, 2), width, strict=True)
    )
    cortex = tuple(float(c) for c in rng.uniform(0.6, 1.5, 2))
    medial = tuple(float(m) for m in rng.uniform(28.0, 35.0, 2))
    cranial = tuple(float(c) for c in rng.normal(19.5, 2.0, 2))
    return C2Params(
        outer_width=(width[0], width[1]),
        height=(height[0], height[1]),
        cortex_mm=(cortex[0], cortex[1]),
        medial_deg=(medial[0], medial[1]),
        cranial_deg=(cranial[0], cranial[1]),
    )

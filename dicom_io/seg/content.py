"""Segments of the spinenode SEG: coded descriptions and the voxel masks behind them.

Masks live on the CT grid, indexed ``[slice, row, column]`` like :attr:`CTVolume.hu`; screws are
voxelised from their entry and tip points in LPS millimetres through the volume affine.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_io.report import AnalysisReport, ReportScrew

logger = logging.getLogger(__name__)

BoolArray = npt.NDArray[np.bool_]

# VerSe ids (L1..L5 = 20..24, S1 = 26); dicom_io keeps its own copy because it may not import
# inference. The SNOMED CT codes are those of pydicom's code dictionary.
_CERVICAL = {i: (f"C{i}", getattr(codes.SCT, f"C{i}Vertebra")) for i in range(1, 8)}
_THORACIC = {7 + i: (f"T{i}", getattr(codes.SCT, f"T{i}Vertebra")) for i in range(1, 13)}
_LUMBAR = {19 + i: (f"L{i}", getattr(codes.SCT, f"L{i}Vertebra")) for i in range(1, 6)}
VERTEBRA_CODES: dict[int, tuple[str, Code]] = {
    **_CERVICAL,
    **_THORACIC,
    **_LUMBAR,
    25: ("L6", codes.SCT.Vertebra),  # a sixth lumbar vertebra has no code of its own
    26: ("S1", codes.SCT.Sacrum),
}
# Values of the parts map for the C2 pediculoisthmic components, as inference.phantom.model.PartId
# (C2_ISTHMUS_LEFT, C2_ISTHMUS_RIGHT); the other part values (pedicles, facet joints) are ignored.
C2_PART_VALUES = {"left": 5, "right": 6}
LATERALITY = {"left": codes.SCT.Left, "right": codes.SCT.Right}


@dataclass(frozen=True, slots=True)
class SegmentSpec:
    """One segment: its number, label, codes and a function that builds its mask on demand."""

    number: int
    label: str
    category: Code
    property_type: Code
    laterality: Code | None
    anatomic_region: Code | None
    tracking_id: str
    mask: Callable[[], BoolArray]
    color_rgb: tuple[int, int, int]


def level_code(level: str) -> Code:
    """SNOMED CT code of a vertebra given by name (``"L4"``); generic ``Vertebra`` if unknown."""
    for name, code in VERTEBRA_CODES.values():
        if name == level:
            return code
    generic: Code = codes.SCT.Vertebra
    return generic


def equal_mask(values: npt.NDArray[np.integer], value: int) -> BoolArray:
    """Voxels of ``values`` equal to ``value``."""
    return np.asarray(values == value, dtype=bool)


Box = tuple[slice, slice, slice]


def screw_box(
    screw: ReportScrew, shape: tuple[int, int, int], affine: npt.NDArray[np.float64]
) -> tuple[Box, BoolArray] | None:
    """The screw's cylinder (entry → tip, LPS mm) within its index-space bounding box.

    Returns the box (slices into an array of ``shape``) and the voxels of the box whose centre lies
    inside the cylinder, or ``None`` when no voxel of the grid does.
    """
    entry = np.asarray(screw.entry_mm, dtype=np.float64)
    tip = np.asarray(screw.tip_mm, dtype=np.float64)
    radius = screw.diameter_mm / 2.0
    axis = tip - entry
    length = float(np.linalg.norm(axis))
    if length == 0:
        return None
    axis /= length
    # Index-space bounding box of the cylinder (its end points padded by the radius on every axis).
    offsets = np.array(np.meshgrid(*[[-radius, radius]] * 3)).reshape(3, -1).T
    corners = np.concatenate([entry + offsets, tip + offsets])
    idx = np.linalg.inv(affine)[:3] @ np.c_[corners, np.ones(len(corners))].T
    lo = np.maximum(np.floor(idx.min(axis=1)).astype(int), 0)
    hi = np.minimum(np.ceil(idx.max(axis=1)).astype(int) + 1, shape)
    if np.any(hi <= lo):
        return None
    grid = np.stack(
        np.meshgrid(*(np.arange(a, b) for a, b in zip(lo, hi, strict=True)), indexing="ij"), -1
    ).reshape(-1, 3)
    points = grid @ affine[:3, :3].T + affine[:3, 3]
    t = (points - entry) @ axis
    radial = np.linalg.norm(points - entry - np.outer(t, axis), axis=1)
    inside = (t >= 0) & (t <= length) & (radial <= radius)
    if not inside.any():
        return None
    box = (slice(lo[0], hi[0]), slice(lo[1], hi[1]), slice(lo[2], hi[2]))
    return box, inside.reshape(tuple(int(b - a) for a, b in zip(lo, hi, strict=True)))


def screw_mask(
    screw: ReportScrew, shape: tuple[int, int, int], affine: npt.NDArray[np.float64]
) -> BoolArray:
    """Voxels of ``shape`` whose centre lies inside the screw's cylinder (entry → tip, LPS mm)."""
    out = np.zeros(shape, dtype=bool)
    found = screw_box(screw, shape, affine)
    if found is not None:
        out[found[0]] = found[1]
    return out


_PALETTE = (
    (230, 159, 0), (86, 180, 233), (0, 158, 115), (240, 228, 66),
    (0, 114, 178), (213, 94, 0), (204, 121, 167), (160, 160, 160),
)  # fmt: skip
SCREW_COLOR = (255, 40, 40)
C2_COLORS = {"left": (60, 220, 60), "right": (60, 120, 255)}


def _vertebra_specs(labels: npt.NDArray[np.integer]) -> list[SegmentSpec]:
    specs = []
    for value in (int(v) for v in np.unique(labels) if v != 0):
        name, code = VERTEBRA_CODES.get(value, (f"vertebra {value}", codes.SCT.Vertebra))
        specs.append(
            SegmentSpec(
                number=0,
                label=name,
                category=codes.cid7150.AnatomicalStructure,
                property_type=code,
                laterality=None,
                anatomic_region=None,
                tracking_id=f"vertebra {name}",
                mask=partial(equal_mask, labels, value),
                color_rgb=_PALETTE[value % len(_PALETTE)],
            )
        )
    return specs


def _c2_specs(c2_parts: npt.NDArray[np.integer]) -> list[SegmentSpec]:
    return [
        SegmentSpec(
            number=0,
            label=f"C2 pediculoisthmic {side}",
            category=codes.cid7150.AnatomicalStructure,
            property_type=codes.SCT.PedicleOfVertebra,
            laterality=LATERALITY[side],
            anatomic_region=codes.SCT.C2Vertebra,
            tracking_id=f"C2 pediculoisthmic {side}",
            mask=partial(equal_mask, c2_parts, value),
            color_rgb=C2_COLORS[side],
        )
        for side, value in C2_PART_VALUES.items()
        if np.any(c2_parts == value)
    ]


def _screw_specs(
    report: AnalysisReport, shape: tuple[int, int, int], affine: npt.NDArray[np.float64]
) -> list[SegmentSpec]:
    specs = []
    for screw in report.screws:
        if screw_box(screw, shape, affine) is None:
            logger.warning("screw %s lies outside the CT grid: left out of the SEG", screw.name)
            continue
        specs.append(
            SegmentSpec(
                number=0,
                label=f"Screw {screw.name}",
                category=codes.cid7150.PhysicalObject,
                property_type=codes.SCT.BoneScrew,
                laterality=LATERALITY[screw.side],
                anatomic_region=level_code(screw.level),
                tracking_id=f"screw {screw.name}",
                mask=partial(screw_mask, screw, shape, affine),
                color_rgb=SCREW_COLOR,
            )
        )
    return specs


def segment_specs(
    report: AnalysisReport,
    labels: npt.NDArray[np.integer],
    c2_parts: npt.NDArray[np.integer] | None,
    affine: npt.NDArray[np.float64],
) -> list[SegmentSpec]:
    """Segments in SEG order, numbered from 1: vertebrae present in ``labels`` (by VerSe id), the
    C2 parts (``c2_parts`` values 5 = left, 6 = right), then each screw of ``report`` that touches
    the CT grid, in report order."""
    shape = (int(labels.shape[0]), int(labels.shape[1]), int(labels.shape[2]))
    specs = [
        *_vertebra_specs(labels),
        *(_c2_specs(c2_parts) if c2_parts is not None else []),
        *_screw_specs(report, shape, affine),
    ]
    return [replace(spec, number=i + 1) for i, spec in enumerate(specs)]


def segment_description(
    spec: SegmentSpec,
    algorithm: hd.AlgorithmIdentificationSequence,
    tracking_uid: str,
) -> hd.seg.SegmentDescription:
    """The highdicom description of ``spec``, with laterality as a property type modifier."""
    description = hd.seg.SegmentDescription(
        segment_number=spec.number,
        segment_label=spec.label,
        segmented_property_category=spec.category,
        segmented_property_type=spec.property_type,
        algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
        algorithm_identification=algorithm,
        tracking_uid=tracking_uid,
        tracking_id=spec.tracking_id,
        anatomic_regions=None if spec.anatomic_region is None else [spec.anatomic_region],
        display_color=hd.color.CIELabColor.from_rgb(*spec.color_rgb),
    )
    if spec.laterality is not None:  # the modifier belongs inside the property type item
        description.SegmentedPropertyTypeCodeSequence[
            0
        ].SegmentedPropertyTypeModifierCodeSequence = [
            hd.sr.CodedConcept(
                spec.laterality.value, spec.laterality.scheme_designator, spec.laterality.meaning
            )
        ]
    return description

"""The spinenode DICOM-SEG: vertebrae, C2 pediculoisthmic components and planned screws.

BINARY (Segmentation Storage) by default, because many archives still refuse the newer Label Map
Segmentation Storage; LABELMAP on request. In a LABELMAP, segments cannot overlap: screws are
painted over the vertebrae they cross and the C2 parts over C2, so a screw's voxels are not also
"vertebra" there. Frames are on the CT grid (one per source slice and segment,
empty frames omitted).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from enum import StrEnum

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian, RLELossless

from dicom_io.derived import DerivedSeries, finish, is_aligned, replace_uids
from dicom_io.errors import DicomIOError
from dicom_io.report import AnalysisReport
from dicom_io.seg.content import SegmentSpec, segment_description, segment_specs
from dicom_io.uids import UIDFactory
from dicom_io.volume import CTVolume

logger = logging.getLogger(__name__)


class SegmentationKind(StrEnum):
    """Which SEG SOP class to write."""

    BINARY = "BINARY"
    LABELMAP = "LABELMAP"


class EmptySegmentationError(DicomIOError):
    """There is nothing to segment: no vertebra, C2 part or screw."""


@dataclass(frozen=True, slots=True)
class Equipment:
    """The node as the manufacturer of derived objects."""

    manufacturer: str
    model_name: str
    software_version: str
    device_serial_number: str


def algorithm_identification(report: AnalysisReport) -> hd.AlgorithmIdentificationSequence:
    """Algorithm identification: name, version (pipeline) and engine (geometric / learned)."""
    family = (
        codes.cid7162.ArtificialIntelligence
        if "learned" in report.engine.lower()
        else codes.cid7162.MorphologicalOperations
    )
    return hd.AlgorithmIdentificationSequence(
        name=f"spinenode {report.engine}",
        family=family,
        version=report.version,
        source="spinenode",
        parameters={"engine": report.engine},
    )


def _bounding_box(mask: npt.NDArray[np.bool_]) -> tuple[slice, slice, slice] | None:
    """The smallest box holding every true voxel of ``mask``, or ``None`` if it is empty."""
    zs = np.flatnonzero(mask.any(axis=(1, 2)))
    if zs.size == 0:
        return None
    slab = mask[zs[0] : zs[-1] + 1]
    rs = np.flatnonzero(slab.any(axis=(0, 2)))
    cs = np.flatnonzero(slab.any(axis=(0, 1)))
    return (
        slice(int(zs[0]), int(zs[-1]) + 1),
        slice(int(rs[0]), int(rs[-1]) + 1),
        slice(int(cs[0]), int(cs[-1]) + 1),
    )


def _pixels(
    specs: list[SegmentSpec], kind: SegmentationKind, shape: tuple[int, int, int]
) -> npt.NDArray[np.generic]:
    if kind is SegmentationKind.LABELMAP:
        dtype = np.uint8 if len(specs) < 256 else np.uint16
        labelmap = np.zeros(shape, dtype=dtype)
        for spec in specs:  # later segments (C2 parts, screws) are painted over earlier ones
            labelmap[spec.mask()] = spec.number
        return labelmap
    stack = np.zeros((*shape, len(specs)), dtype=bool)
    for i, spec in enumerate(specs):
        # Writing along the last (segment) axis is strided: only touch the mask's bounding box.
        mask = spec.mask()
        box = _bounding_box(mask)
        if box is not None:
            stack[(*box, i)] = mask[box]
    return stack


def _as_volume(
    pixels: npt.NDArray[np.generic],
    volume: CTVolume,
    numbers: list[int],
    kind: SegmentationKind,
) -> hd.Volume:
    affine = np.asarray(volume.affine, dtype=np.float64)
    if kind is SegmentationKind.LABELMAP:
        return hd.Volume(pixels, affine, "PATIENT", volume.frame_of_reference_uid)
    return hd.Volume(
        pixels,
        affine,
        "PATIENT",
        volume.frame_of_reference_uid,
        channels={"SegmentNumber": list(numbers)},
    )


def _transfer_syntax(kind: SegmentationKind, compress_labelmap: bool) -> str:
    if compress_labelmap and kind is SegmentationKind.LABELMAP:
        return str(RLELossless)
    return str(ExplicitVRLittleEndian)


def _content(
    volume: CTVolume,
    report: AnalysisReport,
    masks: tuple[npt.NDArray[np.integer], npt.NDArray[np.integer] | None],
    kind: SegmentationKind,
) -> tuple[list[hd.seg.SegmentDescription], npt.NDArray[np.generic] | hd.Volume]:
    """Segment descriptions and the pixel array (or volume) that highdicom encodes."""
    labels, c2_parts = masks
    if labels.shape != volume.shape:
        raise DicomIOError(
            f"the label map has shape {labels.shape}, the CT {volume.shape}", labels.shape
        )
    specs = segment_specs(report, labels, c2_parts, np.asarray(volume.affine, dtype=np.float64))
    if not specs:
        raise EmptySegmentationError("nothing to segment: no vertebra, C2 part or screw", None)
    uid = UIDFactory(volume.series_instance_uid, report.uid_seed)
    algorithm = algorithm_identification(report)
    descriptions = [segment_description(s, algorithm, uid(f"segment.{s.label}")) for s in specs]
    pixels: npt.NDArray[np.generic] | hd.Volume = _pixels(specs, kind, volume.shape)
    if not is_aligned(volume):  # frames placed by the affine; sources are references only
        pixels = _as_volume(np.asarray(pixels), volume, [s.number for s in specs], kind)
    return descriptions, pixels


def build_segmentation(
    volume: CTVolume,
    sources: list[Dataset],
    report: AnalysisReport,
    masks: tuple[npt.NDArray[np.integer], npt.NDArray[np.integer] | None],
    *,
    series: DerivedSeries,
    equipment: Equipment,
    kind: SegmentationKind = SegmentationKind.BINARY,
    compress_labelmap: bool = True,
) -> hd.seg.Segmentation:
    """Build the SEG for ``report`` on the grid of ``volume``.

    Parameters
    ----------
    volume:
        The analysed CT (hu ``[slice, row, column]``, affine index → LPS mm).
    sources:
        One dataset per slice, from :func:`dicom_io.derived.source_datasets`.
    report:
        The analysis result; its screws are voxelised as cylinders.
    masks:
        ``(labels, c2_parts)``: the uint8 VerSe label map on the CT grid, and the C2 parts map
        (5 = left, 6 = right pediculoisthmic component, other values ignored) or ``None``.
    series, equipment, kind:
        Output series identity, manufacturer, SEG type.
    compress_labelmap:
        Encode a LABELMAP with RLE Lossless (about 50 times smaller on a spine CT). A BINARY SEG is
        always bit-packed and uncompressed, which every archive reads.

    Raises
    ------
    EmptySegmentationError
        When there is not a single non-empty segment.
    """
    uid = UIDFactory(volume.series_instance_uid, report.uid_seed)
    descriptions, pixels = _content(volume, report, masks, kind)
    seg = hd.seg.Segmentation(
        source_images=sources,
        pixel_array=pixels,
        segmentation_type=hd.seg.SegmentationTypeValues(kind.value),
        segment_descriptions=descriptions,
        series_instance_uid=series.series_instance_uid,
        series_number=series.series_number,
        sop_instance_uid=uid(f"seg.{kind.value.lower()}.instance"),
        instance_number=1,
        manufacturer=equipment.manufacturer,
        manufacturer_model_name=equipment.model_name,
        software_versions=equipment.software_version,
        device_serial_number=equipment.device_serial_number,
        content_description=series.series_description[:64],
        content_label="SPINE_SEG",
        content_creator_name="spinenode^automatic",
        series_description=series.series_description,
        content_date=series.created.date(),
        content_time=series.created.time(),
        omit_empty_frames=True,
        transfer_syntax_uid=_transfer_syntax(kind, compress_labelmap),
    )
    finish(seg, series.created)
    replace_uids(seg, "DimensionOrganizationUID", uid("seg.dimension-organization"))
    logger.info(
        "SEG %s: %d segments, %d frames", kind.value, len(descriptions), int(seg.NumberOfFrames)
    )
    return seg

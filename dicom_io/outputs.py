"""Write every result object of one analysis: SEG, TID 1500 SR and secondary captures.

``node`` calls :func:`write_outputs` with the CT volume, the ``result.json`` dictionary parsed by
:meth:`~dicom_io.report.AnalysisReport.from_json`, the label maps on the CT grid and a folder. The
objects get deterministic UIDs (source series UID + pipeline version + role) and the source's date
and time, so writing the same result twice yields byte-identical files.
"""

from __future__ import annotations

import datetime
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.derived import DerivedSeries, creation_time, source_datasets
from dicom_io.report import AnalysisReport
from dicom_io.sc import views
from dicom_io.sc.sop import CaptureInfo, multi_frame, single_frame
from dicom_io.seg.sop import (
    EmptySegmentationError,
    Equipment,
    SegmentationKind,
    build_segmentation,
)
from dicom_io.sr.sop import build_measurement_report
from dicom_io.uids import UIDFactory
from dicom_io.volume import CTVolume

logger = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class OutputOptions:
    """What to write and how.

    Attributes
    ----------
    segmentation_type:
        ``BINARY`` (Segmentation Storage, accepted everywhere) or ``LABELMAP``.
    compress_labelmap:
        Write a LABELMAP SEG with RLE Lossless (default) instead of uncompressed.
    seg, sr, sc:
        Which kinds of object to write.
    series_number_base:
        The SEG, SR and SC series get numbers ``base + 1``, ``base + 2``, ``base + 3``.
    manufacturer, model_name:
        Written as the equipment that made the objects.
    created:
        Content date/time of every object; ``None`` = the source series' date and time.
    """

    segmentation_type: SegmentationKind = SegmentationKind.BINARY
    compress_labelmap: bool = True
    seg: bool = True
    sr: bool = True
    sc: bool = True
    series_number_base: int = 7700
    manufacturer: str = "spinenode"
    model_name: str = "spinenode"
    created: datetime.datetime | None = None


def _save(ds: Dataset, path: Path) -> Path:
    """Write ``ds`` atomically (temporary file, fsync, rename)."""
    tmp = path.with_name(f".{path.name}.tmp")
    ds.save_as(tmp, enforce_file_format=True)
    with tmp.open("rb") as fh:
        os.fsync(fh.fileno())
    tmp.replace(path)
    return path


def _series(
    volume: CTVolume, report: AnalysisReport, options: OutputOptions, kind: tuple[str, int, str]
) -> DerivedSeries:
    role, offset, description = kind
    uid = UIDFactory(volume.series_instance_uid, report.uid_seed)
    return DerivedSeries(
        series_instance_uid=uid(f"{role}.series"),
        series_number=options.series_number_base + offset,
        series_description=description,
        created=creation_time(volume, options.created),
    )


def _write_captures(
    volume: CTVolume,
    report: AnalysisReport,
    reference: Dataset,
    out_dir: Path,
    context: tuple[DerivedSeries, Equipment],
) -> list[Path]:
    series, equipment = context
    uid = UIDFactory(volume.series_instance_uid, report.uid_seed)
    screws = views.numbered(report)
    written: list[Path] = []

    def info(role: str, description: str) -> CaptureInfo:
        number = len(written) + 1
        return CaptureInfo(uid(f"sc.instance.{role}"), number, description)

    for level, at_level in views.levels(screws).items():
        canvas = views.level_canvas(volume, level, at_level)
        sc = single_frame(
            canvas.render(),
            canvas.panels[0][1],
            reference,
            info(f"level.{level}", f"{level} planned screws: axial and sagittal oblique"),
            series=series,
            equipment=equipment,
        )
        written.append(_save(sc, out_dir / f"sc_{len(written) + 1:02d}_{level}.dcm"))
    if screws:
        canvas = views.overview_canvas(volume, screws, report.warnings)
        sc = single_frame(
            canvas.render(),
            canvas.panels[0][1],
            reference,
            info("overview", "Overview of all planned screws"),
            series=series,
            equipment=equipment,
        )
        written.append(_save(sc, out_dir / f"sc_{len(written) + 1:02d}_overview.dcm"))
    for finding in report.c2:
        frames = views.c2_frames(volume, finding)
        mf = multi_frame(
            frames,
            views.c2_planes(finding)[2],
            reference,
            info(f"c2.{finding.side}", f"C2 {finding.side} isthmus slices"),
            series=series,
            equipment=equipment,
        )
        written.append(_save(mf, out_dir / f"sc_{len(written) + 1:02d}_C2_{finding.side}.dcm"))
    return written


def _build_seg(
    volume: CTVolume,
    report: AnalysisReport,
    masks: tuple[npt.NDArray[np.integer], npt.NDArray[np.integer] | None],
    sources: list[Dataset],
    how: tuple[OutputOptions, Equipment],
) -> Dataset | None:
    """The SEG, or ``None`` when it is not wanted or there is nothing to segment."""
    options, equipment = how
    if not options.seg:
        return None
    try:
        return build_segmentation(
            volume,
            sources,
            report,
            masks,
            series=_series(volume, report, options, ("seg", 1, "Spine segmentation")),
            equipment=equipment,
            kind=options.segmentation_type,
            compress_labelmap=options.compress_labelmap,
        )
    except EmptySegmentationError as exc:
        logger.info("series %s: no SEG written: %s", volume.series_instance_uid, exc)
        return None


def write_outputs(
    volume: CTVolume,
    report: AnalysisReport,
    labels: npt.NDArray[np.integer],
    c2_parts: npt.NDArray[np.integer] | None,
    out_dir: Path,
    *,
    options: OutputOptions | None = None,
) -> list[Path]:
    """Write the SEG, the SR and the secondary captures of ``report`` into ``out_dir``.

    Parameters
    ----------
    volume:
        The analysed CT: hu ``[slice, row, column]``, affine index → LPS mm, source references.
    report:
        ``AnalysisReport.from_json(result.to_json())``.
    labels:
        VerSe vertebra ids (uint8) on the CT grid.
    c2_parts:
        The parts map on the CT grid, or ``None``: 5 = C2 pediculoisthmic component left, 6 = right
        (the values of ``inference.phantom.model.PartId``); other values are ignored.
    out_dir:
        Created if missing; files are named ``seg.dcm``, ``sr.dcm``, ``sc_NN_<what>.dcm``.
    options:
        :class:`OutputOptions`; defaults write everything, SEG as BINARY.

    Returns
    -------
    list[pathlib.Path]
        The files written, SEG first, then SR, then the captures.
    """
    options = options or OutputOptions()
    out_dir.mkdir(parents=True, exist_ok=True)
    equipment = Equipment(options.manufacturer, options.model_name, report.version, "1")
    sources = source_datasets(volume)
    written: list[Path] = []
    seg = _build_seg(volume, report, (labels, c2_parts), sources, (options, equipment))
    if seg is not None:
        written.append(_save(seg, out_dir / "seg.dcm"))
    if options.sr and (report.screws or report.c2):
        sr = build_measurement_report(
            (volume.series_instance_uid, volume.frame_of_reference_uid),
            sources,
            report,
            seg,
            series=_series(volume, report, options, ("sr", 2, "Screw plan and C2 report")),
            equipment=equipment,
        )
        written.append(_save(sr, out_dir / "sr.dcm"))
    if options.sc:
        sc_series = _series(volume, report, options, ("sc", 3, "Screw plan images"))
        written += _write_captures(volume, report, sources[0], out_dir, (sc_series, equipment))
    logger.info("series %s: %d result objects written", volume.series_instance_uid, len(written))
    return written

"""CT series assembly: files or datasets → one checked :class:`~dicom_io.volume.CTVolume`.

:func:`find_series` groups a folder's DICOM files by SeriesInstanceUID; :func:`load_series` turns
one series into HU on a regular grid in LPS millimetres, or raises a
:class:`~dicom_io.errors.DicomIOError` subclass whose message tells an administrator what is wrong.
What is accepted, repaired, resampled or refused is set by :class:`~dicom_io.policy.LoadPolicy`
and described in docs/loading.md.
"""

from __future__ import annotations

import logging
import multiprocessing
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset

from dicom_io.errors import NotApplicableError, UnreadableFileError
from dicom_io.frames import (
    FrameInfo,
    Instance,
    check_is_ct,
    frames_of,
    instances_from,
    read_header,
    without,
)
from dicom_io.identity import check_identity
from dicom_io.pixels import decode_file, decode_into, fill_padding
from dicom_io.policy import LoadPolicy
from dicom_io.stacking import StackPlan, plan_stack, resample_stack, tissue_shifted_out
from dicom_io.volume import CTVolume, SourceInstance

logger = logging.getLogger(__name__)

_HEADER_DROP = ("PixelData", "PerFrameFunctionalGroupsSequence")
_DICOMDIR = "1.2.840.10008.1.3.10"  # Media Storage Directory Storage
_TISSUE_HU = -500.0  # above: not air, worth a warning when the tilt correction cuts it off


@dataclass(frozen=True, slots=True)
class SeriesFiles:
    """The files of one series found in a folder (grouped by SeriesInstanceUID, as received).

    ``series_instance_uid`` is ``""`` for files whose SeriesInstanceUID is empty; they form one
    group, which :func:`load_series` refuses or repairs as its policy says.
    """

    series_instance_uid: str
    modality: str
    series_description: str
    series_number: int | None
    paths: tuple[Path, ...]


def _scan(folder: Path) -> dict[str, list[tuple[Path, Dataset]]]:
    """Headers of the DICOM files under ``folder``, grouped by SeriesInstanceUID."""
    if folder.is_file():
        files = [folder]
    elif folder.is_dir():
        files = sorted(p for p in folder.rglob("*") if p.is_file())
    else:
        raise UnreadableFileError(f"{folder}: no such file or folder", str(folder))
    groups: dict[str, list[tuple[Path, Dataset]]] = {}
    for path in files:
        try:
            header = read_header(path)
        except UnreadableFileError as exc:
            logger.debug("skipping %s: %s", path, exc)
            continue
        meta = getattr(header, "file_meta", None)
        if meta is not None and meta.get("MediaStorageSOPClassUID") == _DICOMDIR:
            continue  # an index of the files, not an instance
        uid = str(header.get("SeriesInstanceUID", "") or "").strip()
        groups.setdefault(uid, []).append((path, header))
    return groups


def _series_files(uid: str, members: list[tuple[Path, Dataset]]) -> SeriesFiles:
    first = members[0][1]
    number = first.get("SeriesNumber")
    return SeriesFiles(
        series_instance_uid=uid,
        modality=str(first.get("Modality", "") or ""),
        series_description=str(first.get("SeriesDescription", "") or ""),
        series_number=None if number in (None, "") else int(number),
        paths=tuple(path for path, _ in members),
    )


def find_series(folder: Path) -> list[SeriesFiles]:
    """Group the DICOM files under ``folder`` (recursively) by SeriesInstanceUID.

    ``folder`` may also be a single file (a multi-frame instance, say): one series or none.

    Files that are not DICOM are skipped (logged at DEBUG). Series are listed by series number,
    then UID; paths within a series by name (not by position: that is :func:`load_series`'s job).
    """
    found = [_series_files(uid, members) for uid, members in _scan(folder).items()]
    return sorted(
        found, key=lambda s: (s.series_number is None, s.series_number or 0, s.series_instance_uid)
    )


def _instances(source: Path | SeriesFiles | Sequence[Path] | Sequence[Dataset]) -> list[Instance]:
    if isinstance(source, SeriesFiles):
        return instances_from(list(source.paths))
    if isinstance(source, Path):
        if not source.is_dir():
            return instances_from([source])
        groups = _scan(source)
        if not groups:
            raise NotApplicableError(f"{source}: no DICOM files found", str(source))
        if len(groups) > 1:
            raise NotApplicableError(
                f"{source}: holds {len(groups)} series; load one at a time (spinenode inspect "
                "lists them)",
                sorted(groups),
            )
        [members] = groups.values()
        return [Instance(str(path), header, path=path) for path, header in members]
    return instances_from(source)


def _drop_localizers(instances: list[Instance]) -> tuple[list[Instance], tuple[str, ...]]:
    """Scout images (ImageType value 3 LOCALIZER) sent within the series are set aside."""
    images = []
    for inst in instances:
        image_type = inst.header.get("ImageType")
        values = [] if image_type is None else [str(v).upper() for v in np.atleast_1d(image_type)]
        if "LOCALIZER" not in values[2:3]:
            images.append(inst)
    dropped = len(instances) - len(images)
    if not dropped:
        return instances, ()
    if not images:
        raise NotApplicableError("the series holds only localizer (scout) images", dropped)
    return images, (f"{dropped} localizer (scout) image(s) in the series ignored",)


def _drop_copies(instances: list[Instance]) -> list[Instance]:
    """The same SOP instance received twice counts once."""
    seen: set[str] = set()
    unique = []
    for inst in instances:
        uid = str(inst.header.SOPInstanceUID)
        if uid in seen:
            logger.info("dropping a second copy of SOP instance %s", uid)
            continue
        seen.add(uid)
        unique.append(inst)
    return unique


def _header(inst: Instance) -> Dataset:
    return without(inst.header, _HEADER_DROP)


def load_series(
    source: Path | SeriesFiles | Sequence[Path] | Sequence[Dataset],
    *,
    policy: LoadPolicy | None = None,
    workers: int = 1,
) -> CTVolume:
    """Load one CT series as Hounsfield units on a regular grid (LPS mm).

    Parameters
    ----------
    source:
        A folder holding exactly one series, one file (a multi-frame Enhanced CT), a
        :class:`SeriesFiles` from :func:`find_series`, a list of files, or a list of datasets
        (with their pixel data).
    policy:
        Tolerances; default :class:`LoadPolicy()`.
    workers:
        Decode files in this many processes (worth it for JPEG 2000 on a machine with spare
        cores; each process costs about a second to start).

    Returns
    -------
    CTVolume
        ``hu[slice, row, column]`` with the slice axis along the image normal (row cosines ×
        column cosines: feet → head for axial images), the affine index → LPS mm, and what was
        tolerated in ``warnings``. After resampling, ``sources`` lists the instances resampled
        from, in stacking order (so it may differ in length from the slice count).

    Raises
    ------
    UnreadableFileError, NotApplicableError, MalformedDatasetError, PixelDataError, GeometryError
        See :mod:`dicom_io.errors`; each message says what is wrong with which file.
    """
    policy = policy or LoadPolicy()
    instances = _instances(source)
    if not instances:
        raise NotApplicableError("no instances given", None)
    for inst in instances:
        check_is_ct(inst)
    instances, localizers = _drop_localizers(instances)
    identity = check_identity(instances, policy.repair_uids)
    instances = _drop_copies(instances)
    frames = [f for i, inst in enumerate(instances) for f in frames_of(i, inst)]
    if len(frames) < policy.min_slices:
        raise NotApplicableError(
            f"the series has {len(frames)} slice(s); a volume needs at least {policy.min_slices}",
            len(frames),
        )
    labels = [inst.label for inst in instances]
    plan = plan_stack(frames, labels, policy)
    kept = [frames[i] for i in plan.order]
    hu, padded = _decode(instances, kept, workers)
    fill = fill_padding(hu) if padded else min(-1024.0, float(hu.min()))
    warnings = localizers + identity.warnings + plan.warnings + _tissue_lost(hu, plan)
    hu = resample_stack(hu, plan, fill)
    sources = tuple(_source(instances[f.instance], f) for f in kept)
    logger.info(
        "series %s: %d slices %s, spacing %s mm, %d warning(s)",
        identity.series_instance_uid,
        hu.shape[0],
        hu.shape,
        np.round(np.linalg.norm(plan.affine[:3, :3], axis=0), 3).tolist(),
        len(warnings),
    )
    return CTVolume(
        hu=hu,
        affine=plan.affine,
        study_instance_uid=identity.study_instance_uid,
        series_instance_uid=identity.series_instance_uid,
        frame_of_reference_uid=identity.frame_of_reference_uid,
        sources=sources,
        header=_header(instances[kept[0].instance]),
        warnings=warnings,
    )


def _tissue_lost(hu: npt.NDArray[np.float32], plan: StackPlan) -> tuple[str, ...]:
    """A warning when the tilt correction is about to shift non-air voxels off the grid."""
    if not np.any(plan.shifts):
        return ()
    lost = tissue_shifted_out(hu, plan, _TISSUE_HU)
    if not lost:
        return ()
    return (
        f"the tilt correction moved {lost} voxels above {_TISSUE_HU:g} HU out of the field of "
        "view (at the image border)",
    )


def _source(inst: Instance, frame: FrameInfo) -> SourceInstance:
    return SourceInstance(
        sop_class_uid=str(inst.header.SOPClassUID),
        sop_instance_uid=str(inst.header.SOPInstanceUID),
        frame_number=None if frame.frame is None else frame.frame + 1,
    )


def _decode(
    instances: Sequence[Instance], kept: Sequence[FrameInfo], workers: int
) -> tuple[npt.NDArray[np.float32], bool]:
    """Decode the kept frames, instance by instance, into one preallocated float32 array.

    With ``workers`` > 1 and files (not in-memory datasets), files are decoded in that many
    processes. Returns the array and whether it holds padding (NaN).
    """
    rows, cols = kept[0].size
    hu = np.empty((len(kept), rows, cols), dtype=np.float32)
    labels = [inst.label for inst in instances]
    by_instance: dict[int, list[int]] = {}
    for slot, frame in enumerate(kept):
        by_instance.setdefault(frame.instance, []).append(slot)
    padded = False
    files = [inst.path for inst in instances if inst.path is not None]
    if workers > 1 and len(by_instance) > 1 and len(files) == len(instances):
        try:
            tasks = [
                (slots, files[i], labels[i], [kept[s] for s in slots])
                for i, slots in by_instance.items()
            ]
            return hu, _decode_in_processes(hu, tasks, workers)
        except BrokenProcessPool as exc:  # e.g. a __main__ that spawn cannot re-import
            logger.warning("decoding processes failed (%s); decoding in this process", exc)
    for index, slots in by_instance.items():
        padded |= decode_into(hu, slots, instances[index], [kept[s] for s in slots])
    return hu, padded


def _decode_in_processes(
    hu: npt.NDArray[np.float32],
    tasks: Sequence[tuple[list[int], Path, str, list[FrameInfo]]],
    workers: int,
) -> bool:
    """Decode file by file in ``workers`` spawned processes into ``hu``; return padding found.

    Each task is (slots in ``hu``, file, label for messages, the file's frames to decode).
    """
    padded = False
    context = multiprocessing.get_context("spawn")  # safe in a process that has threads
    with ProcessPoolExecutor(max_workers=workers, mp_context=context) as pool:
        jobs = [
            (slots, pool.submit(decode_file, path, label, frames))
            for slots, path, label, frames in tasks
        ]
        for slots, job in jobs:
            decoded, found = job.result()
            hu[slots] = decoded
            padded |= found
    return padded

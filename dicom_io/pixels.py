"""Pixel data → Hounsfield units, written straight into a preallocated volume.

Decoding goes through pydicom's pixel backends: native (uncompressed), RLE, and the pylibjpeg
plugins for JPEG 2000, JPEG-LS and JPEG lossless. Stored values become HU by each frame's rescale
slope and intercept; pixel padding (PixelPaddingValue, optionally up to PixelPaddingRangeLimit, in
stored values) becomes NaN here and the loader then fills it with the padding HU.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pydicom
from pydicom.dataset import Dataset
from pydicom.pixels.decoders.base import get_decoder
from pydicom.uid import UID

from dicom_io.errors import PixelDataError, UnreadableFileError
from dicom_io.frames import FrameInfo, Instance, frame_count, number

logger = logging.getLogger(__name__)


def _transfer_syntax(ds: Dataset) -> UID:
    meta = getattr(ds, "file_meta", None)
    uid = None if meta is None else meta.get("TransferSyntaxUID")
    return UID(str(uid)) if uid else UID("1.2.840.10008.1.2.1")


def check_decodable(ds: Dataset, label: str) -> None:
    """Raise :class:`PixelDataError` when no installed decoder handles the transfer syntax."""
    syntax = _transfer_syntax(ds)
    try:
        decoder = get_decoder(syntax)
    except NotImplementedError as exc:
        raise PixelDataError(
            f"{label}: transfer syntax {syntax.name} ({syntax}) is not supported by this node; "
            "configure the sender to send uncompressed (Explicit VR Little Endian) or a lossless "
            "JPEG 2000 / JPEG-LS / RLE syntax",
            str(syntax),
        ) from exc
    if not decoder.is_available:
        missing = "; ".join(decoder.missing_dependencies)
        raise PixelDataError(
            f"{label}: transfer syntax {syntax.name} cannot be decoded here, its decoder plugin is "
            f"not installed ({missing})",
            str(syntax),
        )


def _full_dataset(inst: Instance) -> Dataset:
    if inst.dataset is not None:
        return inst.dataset
    assert inst.path is not None  # an Instance has a path or a dataset
    try:
        return pydicom.dcmread(inst.path)
    except Exception as exc:  # damaged after the header was read: unreadable
        raise UnreadableFileError(
            f"{inst.label}: could not be read ({type(exc).__name__}: {exc})", inst.label
        ) from exc


def _stored_frames(
    ds: Dataset, label: str, n_frames: int, size: tuple[int, int]
) -> npt.NDArray[np.integer]:
    """All frames of the instance as stored integers, shape (frames, rows, columns)."""
    if "PixelData" not in ds:
        raise PixelDataError(
            f"{label}: the instance has no pixel data (none sent, or the file is truncated)", None
        )
    check_decodable(ds, label)
    syntax = _transfer_syntax(ds)
    try:
        array = np.asarray(ds.pixel_array)
    except (KeyboardInterrupt, SystemExit):
        raise
    except BaseException as exc:
        # Every decoder failure means the same to an admin. BaseException because the Rust RLE
        # decoder (pylibjpeg-rle) reports damaged input as a pyo3 PanicException, which is not
        # an Exception.
        raise PixelDataError(
            f"{label}: pixel data could not be decoded ({syntax.name}): it is truncated or "
            f"damaged ({type(exc).__name__}: {exc})",
            str(syntax),
        ) from exc
    array = array.reshape((-1, *array.shape[-2:])) if array.ndim >= 2 else array
    if array.shape != (n_frames, *size):
        raise PixelDataError(
            f"{label}: decoded pixel data has shape {array.shape}, expected "
            f"{(n_frames, *size)} (frames, rows, columns)",
            array.shape,
        )
    return array


def _padding_mask(
    ds: Dataset, stored: npt.NDArray[np.integer], label: str
) -> npt.NDArray[np.bool_] | None:
    pad = number(ds, "PixelPaddingValue", label, None)
    if pad is None:
        return None
    limit = number(ds, "PixelPaddingRangeLimit", label, None)
    if limit is None:
        return np.asarray(stored == pad)
    lo, hi = sorted((pad, limit))
    return np.asarray((stored >= lo) & (stored <= hi))


def decode_into(
    out: npt.NDArray[np.float32],
    targets: Sequence[int],
    inst: Instance,
    frames: Sequence[FrameInfo],
) -> bool:
    """Decode ``frames`` (all of one instance) into ``out[targets[k]]`` as HU.

    Padding voxels become NaN. Returns whether any padding was found. Frames of the instance
    that ``frames`` does not list (dropped duplicates) are decoded and ignored.

    Raises
    ------
    PixelDataError
        No decoder, truncated or damaged pixel data, or a shape that does not match the header.
    """
    ds = _full_dataset(inst)
    n_frames = frame_count(ds, inst.label)
    stored = _stored_frames(ds, inst.label, n_frames, frames[0].size)
    found_padding = False
    for target, frame in zip(targets, frames, strict=True):
        plane = stored[frame.frame or 0]
        slot = out[target]
        np.multiply(plane, frame.slope, out=slot, casting="unsafe")
        slot += np.float32(frame.intercept)
        mask = _padding_mask(ds, plane, inst.label)
        if mask is not None and mask.any():
            slot[mask] = np.nan
            found_padding = True
    return found_padding


def fill_padding(hu: npt.NDArray[np.float32]) -> float:
    """Replace NaN (padding) by min(-1024, lowest real HU) in place; return that value."""
    nan = np.isnan(hu)
    real_min = float(np.min(hu, where=~nan, initial=np.inf))
    fill = min(-1024.0, real_min)
    hu[nan] = fill
    return fill


def decode_file(
    path: Path, label: str, frames: Sequence[FrameInfo]
) -> tuple[npt.NDArray[np.float32], bool]:
    """Decode one file's ``frames`` into a new HU array: the unit of work of a decoding process."""
    out = np.empty((len(frames), *frames[0].size), dtype=np.float32)
    padded = decode_into(out, range(len(frames)), Instance(label, Dataset(), path=path), frames)
    return out, padded

"""Errors raised by :mod:`dicom_io`.

Every error carries a plain message that a PACS administrator can act on, and the offending value.
``node`` turns them into a SKIPPED or FAILED job with that message.
"""

from __future__ import annotations


class DicomIOError(Exception):
    """Base class of every error raised by :mod:`dicom_io`."""

    def __init__(self, message: str, value: object = None) -> None:
        super().__init__(message)
        self.value = value


class UnreadableFileError(DicomIOError):
    """A file is not DICOM, or is damaged beyond reading."""


class NotApplicableError(DicomIOError):
    """The input is valid DICOM but not something the node analyses (not CT, one slice, ...)."""


class MalformedDatasetError(DicomIOError):
    """A required attribute is missing, empty or invalid (UIDs, geometry, pixel description)."""


class PixelDataError(DicomIOError):
    """Pixel data cannot be decoded: truncated, or a transfer syntax without a decoder."""


class GeometryError(DicomIOError):
    """The slices do not form one volume: mixed orientations or sizes, gaps, duplicates, tilt."""

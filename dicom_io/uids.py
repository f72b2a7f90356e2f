"""Deterministic UIDs for the objects the node writes.

Every output UID is a ``2.25`` UID (the decimal form of a name-based UUID, RFC 4122 version 5)
derived from the source series UID, the pipeline version and the object's role (``"seg.series"``,
``"sc.instance.3"``, ...). Writing the same result for the same series twice therefore yields the
same UIDs, so a retried job never creates duplicates in the PACS, while a new pipeline version
yields new objects.
"""

from __future__ import annotations

import uuid

from dicom_io.errors import DicomIOError

NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://spinenode.invalid/derived-uids")


class UIDSeedError(DicomIOError):
    """A UID was requested without the values that make it reproducible."""


def derived_uid(source_series_uid: str, version: str, role: str) -> str:
    """Return the UID of output object ``role`` for ``source_series_uid`` at pipeline ``version``.

    Parameters
    ----------
    source_series_uid:
        SeriesInstanceUID of the analysed CT series.
    version:
        Pipeline version (``AnalysisReport.version``).
    role:
        What the UID identifies, unique within one analysis, e.g. ``"seg.instance"``.

    Raises
    ------
    UIDSeedError
        When one of the three values is empty.
    """
    for what, value in (("source series UID", source_series_uid), ("version", version)):
        if not value:
            raise UIDSeedError(f"cannot derive output UIDs: the {what} is empty", value)
    if not role:
        raise UIDSeedError("cannot derive output UIDs: the role is empty", role)
    name = "\x1f".join((source_series_uid, version, role))
    return f"2.25.{uuid.uuid5(NAMESPACE, name).int}"


class UIDFactory:
    """Derives the UIDs of one analysis: ``factory("seg.instance")``."""

    __slots__ = ("source_series_uid", "version")

    def __init__(self, source_series_uid: str, version: str) -> None:
        derived_uid(source_series_uid, version, "check")
        self.source_series_uid = source_series_uid
        self.version = version

    def __call__(self, role: str) -> str:
        return derived_uid(self.source_series_uid, self.version, role)

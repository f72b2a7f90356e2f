"""Errors raised by :mod:`storage`."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error raised by :mod:`storage`."""

    def __init__(self, message: str, value: object = None) -> None:
        super().__init__(message)
        self.value = value


class InvalidUIDError(StorageError):
    """A UID from the wire is not a valid DICOM UID; ``value`` is the offending UID."""


class SpoolError(StorageError):
    """A spool file could not be written; nothing partial was left behind. ``value``: the path."""


class InvalidTransitionError(StorageError):
    """A job state change that the job life cycle does not allow; ``value``: the job id."""


class LeaseLostError(InvalidTransitionError):
    """A worker acted on a job whose lease another worker now holds; ``value``: the job id."""


class JobNotFoundError(StorageError):
    """No job with this id; ``value``: the id."""


class DeliveryNotFoundError(StorageError):
    """No delivery with this id; ``value``: the id."""

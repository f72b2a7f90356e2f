"""Errors raised by :mod:`storage`."""

from __future__ import annotations


class StorageError(Exception):
    """Base class of every error raised by :mod:`storage`."""

    def __init__(self, message: str, value: object = None) -> None:
        super().__init__(message)
        self.value = value

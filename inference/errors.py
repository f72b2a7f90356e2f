"""Errors raised by :mod:`inference`."""

from __future__ import annotations


class InferenceError(Exception):
    """Base class of every error raised by :mod:`inference`."""

    def __init__(self, message: str, value: object = None) -> None:
        super().__init__(message)
        self.value = value


class NotApplicableError(InferenceError):
    """The volume holds no anatomy the pipeline analyses (e.g. no lumbar spine)."""

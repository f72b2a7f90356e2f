"""Fixtures shared by the whole suite."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO_ROOT = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path:
    """The real-data folder: ``$SPINENODE_DATA``, else ``../shared/data`` beside the repository."""
    return Path(os.environ.get("SPINENODE_DATA", REPO_ROOT.parent / "shared" / "data"))


@pytest.fixture
def shared_data() -> Path:
    """The real-data folder, or a skip saying where it was looked for."""
    path = shared_data_dir()
    if not path.is_dir():
        pytest.skip(f"real data not found at {path} (set SPINENODE_DATA to the shared/data folder)")
    return path

"""C2 (axis) pedicle screw feasibility: narrowest pediculoisthmic diameter, risk, probability."""

from __future__ import annotations

from inference.c2.assess import C2Assessment, SliceStack, assess_c2
from inference.c2.settings import C2Settings

__all__ = ["C2Assessment", "C2Settings", "SliceStack", "assess_c2"]

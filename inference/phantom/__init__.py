"""Synthetic spine CT phantoms with exact ground truth (DICOM LPS mm).

>>> spec = PhantomSpec.from_seed(7, "lumbar", spacing_mm=(2.0, 1.0, 1.0))
>>> ph = generate(spec)  # deterministic: same spec → same arrays

See docs/phantoms.md for the label ids, the parts map and the ``truth.json`` keys.
"""

from __future__ import annotations

from inference.phantom.generate import Phantom, generate
from inference.phantom.model import PartId
from inference.phantom.spec import C2Params, PhantomKind, PhantomSpec, VertebraParams
from inference.phantom.truth import PhantomTruth

__all__ = [
    "C2Params",
    "PartId",
    "Phantom",
    "PhantomKind",
    "PhantomSpec",
    "PhantomTruth",
    "VertebraParams",
    "generate",
]

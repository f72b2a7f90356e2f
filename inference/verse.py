"""Vertebra ids in the VerSe convention, used by every label map the node reads or writes."""

from __future__ import annotations

LEVEL_TO_LABEL: dict[str, int] = {
    **{f"C{i}": i for i in range(1, 8)},
    **{f"T{i}": 7 + i for i in range(1, 13)},
    **{f"L{i}": 19 + i for i in range(1, 7)},
    "S1": 26,
}
LABEL_TO_LEVEL: dict[int, str] = {v: k for k, v in LEVEL_TO_LABEL.items()}

LUMBOSACRAL_LEVELS: tuple[str, ...] = ("L1", "L2", "L3", "L4", "L5", "S1")

"""A test analyzer that imports nothing heavy: it writes its pid to ``started`` and sleeps.

Its child process starts in milliseconds, so a test with a one-second time limit knows the
analysis had begun (and which process ran it) when the limit stopped it.
"""

from __future__ import annotations

import os
import time
from collections.abc import Sequence
from pathlib import Path


def sleepy(paths: Sequence[Path], workdir: Path) -> None:
    (workdir / "started").write_text(f"{os.getpid()}\n", encoding="ascii")
    time.sleep(120)

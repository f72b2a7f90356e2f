"""Test analyzers that import nothing heavy, so their analysis process starts in milliseconds.

``sleepy`` writes its pid to ``started`` and sleeps, so a test with a one-second time limit knows
the analysis had begun (and which process ran it) when the limit stopped it. ``crash`` kills its
own process.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Sequence
from pathlib import Path


def sleepy(paths: Sequence[Path], workdir: Path) -> None:
    (workdir / "started").write_text(f"{os.getpid()}\n", encoding="ascii")
    time.sleep(120)


def crash(paths: Sequence[Path], workdir: Path) -> None:
    os.kill(os.getpid(), signal.SIGKILL)


def unpicklable(paths: Sequence[Path], workdir: Path) -> object:
    return lambda: None  # a result that cannot cross to the worker

"""Risk class and the calibrated probability that a C2 pedicle takes a 3.5 mm screw.

Without classifier weights the probability is a logistic in ``MPD − cutoff`` whose slope comes
from the measurement error of the geometric MPD at the scan's voxel size (docs/c2.md): if the
measured MPD ``m`` has error ``N(0, σ²)``, the chance that the true MPD is at least the cut-off is
``Φ((m − cutoff)/σ)``, and ``σ(1.702·x)`` approximates ``Φ(x)`` within 0.01.
"""

from __future__ import annotations

import math

from inference.c2.settings import measurement_sd_mm
from inference.results import Risk

PROBIT_TO_LOGIT = 1.702
GEOMETRIC_METHOD = "geometric-logistic"


def risk_class(mpd_mm: float, cutoff_mm: float) -> Risk:
    """Low risk when ``mpd_mm ≥ cutoff_mm`` (C2-Net / Wu 2023: 4.78 mm for a 3.5 mm screw)."""
    return Risk.LOW if mpd_mm >= cutoff_mm else Risk.HIGH


def logistic_slope(spacing_mm: float) -> float:
    """Slope (per mm) of the logistic at a coarsest voxel spacing of ``spacing_mm``."""
    return PROBIT_TO_LOGIT / measurement_sd_mm(spacing_mm)


def probability_feasible(mpd_mm: float, cutoff_mm: float, spacing_mm: float) -> float:
    """P(true MPD ≥ cutoff | measured ``mpd_mm``) at the given coarsest voxel spacing (mm)."""
    z = logistic_slope(spacing_mm) * (mpd_mm - cutoff_mm)
    if z >= 0:
        return 1.0 / (1.0 + math.exp(-z))
    e = math.exp(z)
    return e / (1.0 + e)

"""Coded concepts of the spinenode measurement report.

Standard codes (SNOMED CT, DCM, UCUM) where one fits; the rest are private codes of the coding
scheme ``99SPINENODE``, declared in the SR's Coding Scheme Identification Sequence.
"""

from __future__ import annotations

from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

SCHEME = "99SPINENODE"
SCHEME_NAME = "spinenode private codes"
SCHEME_UID = "2.25.129740328815236651924736108870374331649"


def _private(value: str, meaning: str) -> Code:
    return Code(value, SCHEME, meaning)


# Units (UCUM)
MM: Code = codes.UCUM.Millimeter
DEG: Code = codes.UCUM.Degree
NO_UNITS: Code = codes.UCUM.NoUnits

# Screw measurements
SCREW_LENGTH: Code = codes.SCT.Length
SCREW_DIAMETER: Code = codes.SCT.Diameter
CHANNEL_LENGTH = _private("SN-CHANNEL", "Pedicle channel length")
PTA = _private("SN-PTA", "Pedicle transverse angle")
PSA = _private("SN-PSA", "Pedicle sagittal angle")
BREACH_DISTANCE = _private("SN-BREACH", "Cortical breach distance")

# Screw qualitative evaluations
GR_GRADE = _private("SN-GR", "Gertzbein-Robbins grade")
GR_VALUES = {g: _private(f"SN-GR-{g}", f"Gertzbein-Robbins grade {g}") for g in "ABCDE"}
BABU_GRADE = _private("SN-BABU", "Babu facet violation grade")
BABU_VALUES = {g: _private(f"SN-BABU-{g}", f"Babu grade {g}") for g in range(4)}
BREACH_DIRECTION = _private("SN-BREACH-DIR", "Direction of worst breach")
DIRECTION_VALUES: dict[str, Code] = {
    "medial": codes.SCT.Medial,
    "lateral": codes.SCT.Lateral,
    "superior": codes.SCT.Superior,
    "inferior": codes.SCT.Inferior,
    "anterior": codes.SCT.Anterior,
    "posterior": codes.SCT.Posterior,
}

# Screw geometry (purpose of reference of the SCOORD3D items)
ENTRY_POINT = _private("SN-ENTRY", "Screw entry point")
TIP_POINT = _private("SN-TIP", "Screw tip point")
SCREW_AXIS = _private("SN-AXIS", "Screw axis")
PLANNED_SCREW: Code = codes.SCT.BoneScrew

# C2 feasibility
MPD = _private("SN-MPD", "Minimum pediculoisthmic diameter")
MPD_METHODS = {
    "outer": _private("SN-MPD-OUTER", "Outer cortical width"),
    "endosteal": _private("SN-MPD-ENDOSTEAL", "Endosteal (marrow cavity) width"),
}
PROBABILITY_FEASIBLE: Code = codes.DCM.Probability
C2_RISK = _private("SN-C2-RISK", "C2 pedicle screw risk")
RISK_VALUES: dict[str, Code] = {"low": codes.SCT.Low, "high": codes.SCT.High}
NARROWEST_SECTION = _private("SN-NARROWEST", "Centre of narrowest pediculoisthmic section")
PEDICLE_AXIS = _private("SN-PEDICLE-AXIS", "Pedicle axis")
C2_PEDICLE: Code = codes.SCT.PedicleOfVertebra
C2_VERTEBRA: Code = codes.SCT.C2Vertebra

# Report-level free-text warnings (TID 1500 row "Qualitative Evaluations")
QUALITATIVE_EVALUATIONS = Code("C0034375", "UMLS", "Qualitative Evaluations")
COMMENT: Code = codes.DCM.Comment

LATERALITY: dict[str, Code] = {"left": codes.SCT.Left, "right": codes.SCT.Right}


def coding_scheme_identification() -> Dataset:
    """The Coding Scheme Identification Sequence item that declares :data:`SCHEME`."""
    item = Dataset()
    item.CodingSchemeDesignator = SCHEME
    item.CodingSchemeUID = SCHEME_UID
    item.CodingSchemeName = SCHEME_NAME
    item.CodingSchemeResponsibleOrganization = "spinenode"
    return item

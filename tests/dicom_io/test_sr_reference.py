"""Our TID 1500 report has the structure of dcmqi's reference report (needs the real data)."""

from __future__ import annotations

from pathlib import Path

import pydicom

from dicom_io.sr.read import measurement_groups
from tests.dicom_io.test_sr import _write


def _top_containers(ds: pydicom.Dataset) -> list[tuple[str, str]]:
    return [
        (
            str(c.ConceptNameCodeSequence[0].CodingSchemeDesignator),
            str(c.ConceptNameCodeSequence[0].CodeValue),
        )
        for c in ds.ContentSequence
        if c.ValueType == "CONTAINER"
    ]


def test_sr_structure_matches_dcmqi_reference(shared_data: Path, tmp_path: Path) -> None:
    reference = pydicom.dcmread(shared_data / "reference-dicom/dcmqi/sr-example/sr.dcm")
    ours = pydicom.dcmread(_write(tmp_path)[0])
    for ds in (reference, ours):
        # Comprehensive SR (dcmqi) / Comprehensive 3D SR (ours: SCOORD3D needs it)
        assert ds.SOPClassUID in {"1.2.840.10008.5.1.4.1.1.88.33", "1.2.840.10008.5.1.4.1.1.88.34"}
        assert ds.ValueType == "CONTAINER"
        assert ds.ConceptNameCodeSequence[0].CodeValue == "126000"  # Imaging Measurement Report
        assert ("DCM", "126010") in _top_containers(ds)  # Imaging Measurements
        concept_mods = {
            c.ConceptNameCodeSequence[0].CodeValue
            for c in ds.ContentSequence
            if c.RelationshipType == "HAS CONCEPT MOD"
        }
        assert {"121049", "121058"} <= concept_mods  # language, procedure reported
        assert "CurrentRequestedProcedureEvidenceSequence" in ds
    # the same reader understands both, and every group is tracked the same way
    for ds in (reference, ours):
        groups = measurement_groups(ds)
        assert groups
        for group in groups:
            assert group.tracking_id and group.tracking_uid
            assert group.finding is not None
            assert group.measurements
    # every top-level attribute of the reference's SR document modules is in ours too
    missing = {e.keyword for e in reference} - {e.keyword for e in ours}
    assert missing <= {
        "",  # private creator
        "DeidentificationMethod",
        "InstanceCreatorUID",
        "PatientAge",
        "PatientIdentityRemoved",
        "PatientWeight",
        "StudyDescription",
    }

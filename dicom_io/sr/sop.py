"""The spinenode measurement report: a Comprehensive 3D SR following TID 1500.

One TID 1501 measurement group per planned screw (tracking identifier and UID, finding site with
laterality, measurements with UCUM units, SCOORD3D entry/tip points and the axis polyline in the
CT's frame of reference, GR and Babu grades as qualitative evaluations) and one per C2 side (MPD
with its measurement method, probability, risk). The evidence lists every source CT image and the
SEG. Coordinates are DICOM LPS millimetres.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import highdicom as hd
import numpy as np
import numpy.typing as npt
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.sr.coding import Code

from dicom_io.derived import DerivedSeries, finish
from dicom_io.report import AnalysisReport, ReportC2, ReportScrew
from dicom_io.seg.content import level_code
from dicom_io.seg.sop import Equipment
from dicom_io.sr import codes as sn
from dicom_io.uids import UIDFactory

logger = logging.getLogger(__name__)

AXIS_HALF_LENGTH_MM = (
    10.0  # the C2 pedicle axis is drawn 10 mm either side of the narrowest section
)


def _coords(
    purpose: Code, graphic_type: str, points: npt.ArrayLike, frame_uid: str
) -> hd.sr.CoordinatesForMeasurement3D:
    return hd.sr.CoordinatesForMeasurement3D(
        graphic_type=graphic_type,
        graphic_data=np.asarray(points, dtype=np.float64).reshape(-1, 3),
        frame_of_reference_uid=frame_uid,
        purpose=purpose,
    )


def _algorithm(report: AnalysisReport, name: str | None = None) -> hd.sr.AlgorithmIdentification:
    return hd.sr.AlgorithmIdentification(
        name=name or f"spinenode {report.engine}", version=report.version
    )


def screw_group(
    screw: ReportScrew, report: AnalysisReport, uid: UIDFactory, frame_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group for one screw; the points hang off the length measurement (INFERRED FROM)."""
    geometry = [
        _coords(sn.ENTRY_POINT, "POINT", [screw.entry_mm], frame_uid),
        _coords(sn.TIP_POINT, "POINT", [screw.tip_mm], frame_uid),
        _coords(sn.SCREW_AXIS, "POLYLINE", [screw.entry_mm, screw.tip_mm], frame_uid),
    ]
    values = (
        (sn.SCREW_LENGTH, screw.length_mm, sn.MM),
        (sn.SCREW_DIAMETER, screw.diameter_mm, sn.MM),
        (sn.CHANNEL_LENGTH, screw.channel_mm, sn.MM),
        (sn.PTA, screw.pta_deg, sn.DEG),
        (sn.PSA, screw.psa_deg, sn.DEG),
        (sn.BREACH_DISTANCE, screw.breach_mm, sn.MM),
    )
    measurements = [
        hd.sr.Measurement(
            name=name,
            value=value,
            unit=unit,
            referenced_coordinates=geometry if name is sn.SCREW_LENGTH else None,
        )
        for name, value, unit in values
    ]
    evaluations = [
        hd.sr.QualitativeEvaluation(sn.GR_GRADE, sn.GR_VALUES[screw.gr_grade]),
        hd.sr.QualitativeEvaluation(sn.BABU_GRADE, sn.BABU_VALUES[screw.babu_grade]),
    ]
    if screw.breach_direction is not None:
        direction = sn.DIRECTION_VALUES.get(screw.breach_direction.lower())
        if direction is not None:
            evaluations.append(hd.sr.QualitativeEvaluation(sn.BREACH_DIRECTION, direction))
    site = hd.sr.FindingSite(level_code(screw.level), laterality=sn.LATERALITY[screw.side])
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uid(f"screw.{screw.level}.{screw.side}"), identifier=f"Screw {screw.name}"
        ),
        finding_type=sn.PLANNED_SCREW,
        algorithm_id=_algorithm(report),
        finding_sites=[site],
        measurements=measurements,
        qualitative_evaluations=evaluations,
    )


def c2_group(
    finding: ReportC2, report: AnalysisReport, uid: UIDFactory, frame_uid: str
) -> hd.sr.MeasurementsAndQualitativeEvaluations:
    """TID 1501 group for one C2 side: MPD (outer or endosteal width), probability, risk."""
    centre = np.asarray(finding.location_mm)
    axis = np.asarray(finding.axis_mm)
    norm = float(np.linalg.norm(axis))
    axis = axis / norm if norm > 0 else axis
    geometry = [_coords(sn.NARROWEST_SECTION, "POINT", [centre], frame_uid)]
    if norm > 0:
        ends = [centre - AXIS_HALF_LENGTH_MM * axis, centre + AXIS_HALF_LENGTH_MM * axis]
        geometry.append(_coords(sn.PEDICLE_AXIS, "POLYLINE", ends, frame_uid))
    measurements = [
        hd.sr.Measurement(
            name=sn.MPD,
            value=finding.mpd_mm,
            unit=sn.MM,
            method=sn.MPD_METHODS[finding.mpd_kind],
            referenced_coordinates=geometry,
        ),
        hd.sr.Measurement(
            name=sn.PROBABILITY_FEASIBLE,
            value=finding.probability_feasible,
            unit=sn.NO_UNITS,
            algorithm_id=_algorithm(report, f"spinenode C2 {finding.method}"),
        ),
    ]
    site = hd.sr.FindingSite(sn.C2_VERTEBRA, laterality=sn.LATERALITY[finding.side])
    return hd.sr.MeasurementsAndQualitativeEvaluations(
        tracking_identifier=hd.sr.TrackingIdentifier(
            uid=uid(f"c2.{finding.side}"), identifier=f"C2 pedicle {finding.side}"
        ),
        finding_type=sn.C2_PEDICLE,
        algorithm_id=_algorithm(report),
        finding_sites=[site],
        measurements=measurements,
        qualitative_evaluations=[
            hd.sr.QualitativeEvaluation(sn.C2_RISK, sn.RISK_VALUES[finding.risk])
        ],
    )


def _observation_context(device_uid: str, equipment: Equipment) -> hd.sr.ObservationContext:
    """The node itself as the (device) observer."""
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=device_uid,
            name="spinenode",
            manufacturer_name=equipment.manufacturer,
            model_name=equipment.model_name,
        ),
    )
    return hd.sr.ObservationContext(observer_device_context=observer)


def _warnings_container(warnings: Sequence[str]) -> hd.sr.ContainerContentItem:
    """TID 1500's optional "Qualitative Evaluations" container: one comment per warning."""
    container = hd.sr.ContainerContentItem(
        name=sn.QUALITATIVE_EVALUATIONS, relationship_type=hd.sr.RelationshipTypeValues.CONTAINS
    )
    container.ContentSequence = hd.sr.ContentSequence(
        [
            hd.sr.TextContentItem(
                name=sn.COMMENT,
                value=text[:1024],
                relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
            )
            for text in warnings
        ]
    )
    return container


def build_measurement_report(
    volume_uids: tuple[str, str],
    sources: Sequence[Dataset],
    report: AnalysisReport,
    seg: Dataset | None,
    *,
    series: DerivedSeries,
    equipment: Equipment,
) -> hd.sr.Comprehensive3DSR:
    """Build the TID 1500 report.

    Parameters
    ----------
    volume_uids:
        ``(series_instance_uid, frame_of_reference_uid)`` of the analysed CT.
    sources:
        One dataset per CT slice (:func:`dicom_io.derived.source_datasets`): the evidence.
    report:
        The analysis result.
    seg:
        The SEG written for the same result, referenced as evidence; ``None`` if not written.
    series, equipment:
        Output series identity and manufacturer.
    """
    source_series_uid, frame_uid = volume_uids
    uid = UIDFactory(source_series_uid, report.uid_seed)
    groups = [screw_group(s, report, uid, frame_uid) for s in report.screws]
    groups += [c2_group(c, report, uid, frame_uid) for c in report.c2]
    content = hd.sr.MeasurementReport(
        observation_context=_observation_context(uid("device"), equipment),
        procedure_reported=codes.cid100.CTUnspecifiedBodyRegion,
        imaging_measurements=groups,
    )
    if report.warnings:
        content[0].ContentSequence.append(_warnings_container(report.warnings))
    evidence = [*sources, *([seg] if seg is not None else [])]
    sr = hd.sr.Comprehensive3DSR(
        evidence=evidence,
        content=content[0],
        series_instance_uid=series.series_instance_uid,
        series_number=series.series_number,
        sop_instance_uid=uid("sr.instance"),
        instance_number=1,
        manufacturer=equipment.manufacturer,
        is_complete=True,
        is_final=True,  # never amended: a new pipeline version writes new objects
        series_description=series.series_description,
        content_date=series.created.date(),
        content_time=series.created.time(),
    )
    sr.CodingSchemeIdentificationSequence = [sn.coding_scheme_identification()]
    sr.SoftwareVersions = equipment.software_version
    sr.ManufacturerModelName = equipment.model_name
    finish(sr, series.created)
    logger.info("SR: %d screw groups, %d C2 groups", len(report.screws), len(report.c2))
    return sr

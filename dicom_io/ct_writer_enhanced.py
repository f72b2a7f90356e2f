"""The Enhanced CT Image Storage attributes that :func:`dicom_io.ct_writer.write_ct_series` adds.

One multi-frame instance, one frame per slice; geometry in the per-frame Plane Position functional
group, everything else shared. Values describe a plausible spiral acquisition (the writer makes
phantom and test series, not measurements).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from pydicom.dataset import Dataset
from pydicom.sequence import Sequence
from pydicom.uid import generate_uid

from dicom_io.geometry import PlaneGeometry, ds_values

if TYPE_CHECKING:
    from pydicom.valuerep import DSfloat

    from dicom_io.ct_writer import CTSeriesSpec


def _item(**attributes: object) -> Dataset:
    ds = Dataset()
    for keyword, value in attributes.items():
        setattr(ds, keyword, value)
    return ds


def _seq(**attributes: object) -> Sequence:
    return Sequence([_item(**attributes)])


def _code(value: str, scheme: str, meaning: str) -> Dataset:
    return _item(CodeValue=value, CodingSchemeDesignator=scheme, CodeMeaning=meaning)


def _shared_groups(
    spec: CTSeriesSpec, geom: PlaneGeometry, rescale: tuple[float, float], thickness: DSfloat
) -> Dataset:
    g = Dataset()
    g.PixelMeasuresSequence = _seq(
        PixelSpacing=ds_values(geom.pixel_spacing),
        SliceThickness=thickness,
        SpacingBetweenSlices=ds_values(geom.slice_spacing)[0],
    )
    g.PlaneOrientationSequence = _seq(ImageOrientationPatient=ds_values(geom.orientation))
    g.FrameAnatomySequence = _seq(
        FrameLaterality="U",
        AnatomicRegionSequence=Sequence([_code("421060004", "SCT", "Spine")]),
    )
    g.PixelValueTransformationSequence = _seq(
        RescaleIntercept=rescale[1], RescaleSlope=rescale[0], RescaleType="HU"
    )
    g.FrameVOILUTSequence = _seq(WindowCenter=400, WindowWidth=1800)
    g.CTImageFrameTypeSequence = _seq(
        FrameType=["ORIGINAL", "PRIMARY", "VOLUME", "NONE"],
        PixelPresentation="MONOCHROME",
        VolumetricProperties="VOLUME",
        VolumeBasedCalculationTechnique="NONE",
    )
    _add_acquisition_groups(g, spec, geom)
    return g


def _add_acquisition_groups(g: Dataset, spec: CTSeriesSpec, geom: PlaneGeometry) -> None:
    """The CT acquisition functional groups (required for ORIGINAL frames): a spiral scan."""
    g.CTAcquisitionTypeSequence = _seq(
        AcquisitionType="SPIRAL", ConstantVolumeFlag="NO", FluoroscopyFlag="NO"
    )
    g.CTAcquisitionDetailsSequence = _seq(
        DataCollectionDiameter=500.0,
        RevolutionTime=0.5,
        SingleCollimationWidth=0.625,
        TotalCollimationWidth=40.0,
        TableHeight=150.0,
        GantryDetectorTilt=0.0,
    )
    g.CTTableDynamicsSequence = _seq(
        TableSpeed=80.0, TableFeedPerRotation=40.0, SpiralPitchFactor=1.0
    )
    g.CTGeometrySequence = _seq(
        DistanceSourceToDetector=1040.0, DistanceSourceToDataCollectionCenter=570.0
    )
    g.CTReconstructionSequence = _seq(
        ReconstructionAlgorithm="FILTER_BACK_PROJ",
        ConvolutionKernel="STANDARD",
        ConvolutionKernelGroup="BONE",
        ReconstructionDiameter=500.0,
        ReconstructionPixelSpacing=ds_values(geom.pixel_spacing),
        ReconstructionAngle=360.0,
        ImageFilter="NONE",
    )
    g.CTExposureSequence = _seq(
        ExposureTimeInms=500.0,
        XRayTubeCurrentInmA=200.0,
        ExposureInmAs=100.0,
        ExposureModulationType="NONE",
    )
    g.CTXRayDetailsSequence = _seq(
        KVP=spec.kvp, FocalSpots=[0.7], FilterType="BODY", FilterMaterial="ALUMINUM"
    )
    g.IrradiationEventIdentificationSequence = _seq(
        IrradiationEventUID=str(generate_uid(spec.uid_prefix, [spec.series_instance_uid, "irr"]))
    )


def _frame_group(spec: CTSeriesSpec, geom: PlaneGeometry, index: int) -> Dataset:
    position = ds_values(geom.positions[index])
    g = Dataset()
    g.FrameContentSequence = _seq(
        FrameAcquisitionNumber=1,
        FrameReferenceDateTime=spec.study_date + spec.study_time,
        FrameAcquisitionDateTime=spec.study_date + spec.study_time,
        FrameAcquisitionDuration=500.0,
        StackID="1",
        InStackPositionNumber=index + 1,
        DimensionIndexValues=[1, index + 1],
    )
    g.PlanePositionSequence = _seq(ImagePositionPatient=position)
    g.CTPositionSequence = _seq(
        TablePosition=ds_values(-geom.slice_locations[index])[0],
        ReconstructionTargetCenterPatient=position,
        DataCollectionCenterPatient=position,
    )
    return g


def _dimensions(spec: CTSeriesSpec) -> tuple[Sequence, Sequence]:
    org_uid = str(generate_uid(spec.uid_prefix, [spec.series_instance_uid, "dim"]))
    organization = _seq(DimensionOrganizationUID=org_uid)
    stack = _item(
        DimensionOrganizationUID=org_uid,
        DimensionIndexPointer=0x00209056,  # Stack ID
        FunctionalGroupPointer=0x00209111,  # Frame Content Sequence
        DimensionDescriptionLabel="Stack ID",
    )
    in_stack = _item(
        DimensionOrganizationUID=org_uid,
        DimensionIndexPointer=0x00209057,  # In-Stack Position Number
        FunctionalGroupPointer=0x00209111,
        DimensionDescriptionLabel="In-Stack Position Number",
    )
    return organization, Sequence([stack, in_stack])


def enhanced_dataset(
    ds: Dataset,
    spec: CTSeriesSpec,
    geom: PlaneGeometry,
    rescale: tuple[float, float],
    thickness: DSfloat,
) -> None:
    """Add the Enhanced CT Image, multi-frame functional group and dimension modules to ``ds``."""
    n_frames = int(geom.positions.shape[0])
    ds.InstanceNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "VOLUME", "NONE"]
    ds.PixelPresentation = "MONOCHROME"
    ds.VolumetricProperties = "VOLUME"
    ds.VolumeBasedCalculationTechnique = "NONE"
    ds.AcquisitionNumber = 1
    ds.AcquisitionDuration = 500.0
    ds.ContentQualification = "PRODUCT"
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "00"
    ds.PresentationLUTShape = "IDENTITY"
    ds.AcquisitionContextSequence = Sequence()
    ds.NumberOfFrames = n_frames
    organization, index = _dimensions(spec)
    ds.DimensionOrganizationSequence = organization
    ds.DimensionIndexSequence = index
    ds.SharedFunctionalGroupsSequence = Sequence([_shared_groups(spec, geom, rescale, thickness)])
    ds.PerFrameFunctionalGroupsSequence = Sequence(
        [_frame_group(spec, geom, i) for i in range(n_frames)]
    )

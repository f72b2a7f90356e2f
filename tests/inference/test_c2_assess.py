"""C2 assessment end to end: a cervical phantom with known MPDs, and a real head CT."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from inference.c2 import C2Assessment, C2Settings, assess_c2
from inference.phantom.generate import Phantom, generate
from inference.phantom.spec import PhantomSpec
from inference.results import MPDKind, Risk, Side

# Seed 22: left 4.31 mm (high risk), right 6.07 mm (low risk); a left/right swap cannot pass.
SEED = 22


@pytest.fixture(scope="module")
def phantom() -> Phantom:
    spec = PhantomSpec.from_seed(SEED, "cervical", spacing_mm=(1.0, 0.6, 0.6), fov_mm=100.0)
    return generate(spec)


@pytest.fixture(scope="module")
def assessed(phantom: Phantom) -> C2Assessment:
    return assess_c2(phantom.hu, phantom.affine, C2Settings())


def test_phantom_mpd_per_side_matches_the_truth(phantom: Phantom, assessed: C2Assessment) -> None:
    result = assessed
    assert result.warnings == ()
    assert [f.side for f in result.findings] == [Side.LEFT, Side.RIGHT]
    truth = {t.side: t for t in phantom.truth.c2}
    assert abs(truth["left"].mpd_outer_mm - truth["right"].mpd_outer_mm) > 1.0
    for f in result.findings:
        t = truth[str(f.side)]
        assert f.mpd_kind is MPDKind.OUTER
        assert f.mpd_mm == pytest.approx(t.mpd_outer_mm, abs=0.3)
        assert np.linalg.norm(np.subtract(f.location_mm, t.location)) < 2.0
        assert abs(float(np.dot(f.axis_mm, t.axis))) > np.cos(np.radians(12.0))
        assert f.risk is (Risk.LOW if t.mpd_outer_mm >= 4.78 else Risk.HIGH)
        assert (f.probability_feasible > 0.5) == (f.risk is Risk.LOW)
        assert f.method == "geometric-logistic"
        # patient left is LPS +x: the left pedicle lies on the +x side of the right one
    left, right = result.findings
    assert left.location_mm[0] > right.location_mm[0]


def test_phantom_slice_stacks_are_centred_on_the_isthmus(assessed: C2Assessment) -> None:
    settings = C2Settings()
    result = assessed
    assert len(result.stacks) == 2
    for stack, finding in zip(result.stacks, result.findings, strict=True):
        n = round(settings.slice_field_mm / settings.slice_pixel_mm)
        assert stack.side is finding.side
        assert stack.hu.shape == (5, n, n)
        middle = stack.affine @ np.array([2.0, (n - 1) / 2, (n - 1) / 2, 1.0])
        np.testing.assert_allclose(middle[:3], finding.location_mm, atol=1e-6)
        step = stack.affine[:3, 0]
        assert np.linalg.norm(step) == pytest.approx(1.0)  # 1 mm between the 5 sections
        centre = stack.hu[2, n // 2 - 2 : n // 2 + 3, n // 2 - 2 : n // 2 + 3]
        assert float(centre.mean()) > 100.0  # bone (marrow or cortex) at the isthmus centre


def test_phantom_labels_give_the_same_answer(phantom: Phantom, assessed: C2Assessment) -> None:
    plain = assessed
    labelled = assess_c2(phantom.hu, phantom.affine, labels=phantom.labels)
    assert [f.side for f in labelled.findings] == [Side.LEFT, Side.RIGHT]
    for a, b in zip(plain.findings, labelled.findings, strict=True):
        assert a.mpd_mm == pytest.approx(b.mpd_mm, abs=0.3)


def test_endosteal_option_is_reported_as_such(phantom: Phantom) -> None:
    result = assess_c2(phantom.hu, phantom.affine, C2Settings(mpd_kind=MPDKind.ENDOSTEAL))
    truth = {t.side: t for t in phantom.truth.c2}
    for f in result.findings:
        assert f.mpd_kind is MPDKind.ENDOSTEAL
        assert f.mpd_mm < truth[str(f.side)].mpd_outer_mm
        assert f.to_json()["mpd_kind"] == "endosteal"


def test_head_ct_with_only_the_tip_of_c2_gives_a_warning(shared_data: Path) -> None:
    from dicom_io.series import load_series

    folder = shared_data / "real-dicom" / "ge-head-gantry-tilt"
    if not folder.is_dir():
        pytest.skip(f"{folder} is absent")
    volume = load_series(folder)  # resampled for the 18.5° tilt, 4 mm slices
    result = assess_c2(volume.hu, volume.affine)
    assert result.findings == ()
    assert any("coarser than" in w for w in result.warnings)
    # even when thick slices were allowed, only the dens tip is in view: still no number
    relaxed = assess_c2(volume.hu, volume.affine, C2Settings(max_spacing_mm=5.0))
    assert relaxed.findings == ()
    assert relaxed.warnings


def test_pipeline_reports_c2_on_a_cervical_ct_without_lumbar_spine(phantom: Phantom) -> None:
    from inference.pipeline import analyze_volume

    out = analyze_volume(phantom.hu, phantom.affine)
    result = out.result
    assert result.screws == ()
    assert [f.side for f in result.c2] == [Side.LEFT, Side.RIGHT]
    truth = {t.side: t for t in phantom.truth.c2}
    for f in result.c2:
        assert f.mpd_mm == pytest.approx(truth[str(f.side)].mpd_outer_mm, abs=0.3)
    assert "c2" in result.timings_s
    assert result.to_json()["c2"][0]["side"] == "left"


def test_pipeline_maps_each_pediculoisthmic_component_on_its_own_side(phantom: Phantom) -> None:
    from scipy import ndimage

    from inference.pipeline import analyze_volume

    parts = analyze_volume(phantom.hu, phantom.affine).c2_parts
    assert parts is not None and parts.shape == phantom.hu.shape
    spacing = np.linalg.norm(phantom.affine[:3, :3], axis=0)
    outside_c2_mm = ndimage.distance_transform_edt(phantom.labels != 2, sampling=spacing)
    for ours, other in ((5, 6), (6, 5)):  # the phantom's part ids for the C2 isthmus L / R
        mask = parts == ours
        assert mask.sum() > 50
        assert set(np.unique(phantom.labels[mask])) <= {0, 2}  # no other vertebra
        assert outside_c2_mm[mask].max() <= 1.0  # at most a partial-volume voxel off C2
        assert np.logical_and(mask, phantom.parts == ours).sum() > 20
        assert not np.logical_and(mask, phantom.parts == other).any()

"""Phantoms: the truth matches the voxels, and the same seed gives the same bytes.

Small grids everywhere; 0.25–0.3 mm only in cropped regions around the structure measured.
"""

from __future__ import annotations

import itertools
import json
import math

import numpy as np
import pytest
from scipy import ndimage

from inference.errors import InferenceError
from inference.phantom import PartId, PhantomKind, PhantomSpec, PhantomTruth, generate
from inference.phantom.anatomy import build_anatomy
from inference.phantom.spec import SEGMENTAL_LORDOSIS
from inference.phantom.truth import SCREW_DIAMETERS, SCREW_LENGTHS, channel
from inference.verse import LEVEL_TO_LABEL
from tests.inference.phantom_measure import chord, min_feret, section_centroid, smooth_mask

COARSE = (3.0, 3.0, 3.0)


def _coarse(seed: int, kind: str, **kw: object) -> PhantomSpec:
    return PhantomSpec.from_seed(seed, kind, spacing_mm=COARSE, fov_mm=260.0, **kw)


def test_same_seed_same_bytes_and_other_seed_differs() -> None:
    a = generate(_coarse(11, "lumbar"))
    b = generate(_coarse(11, "lumbar"))
    c = generate(_coarse(12, "lumbar"))
    assert a.hu.tobytes() == b.hu.tobytes()
    assert a.labels.tobytes() == b.labels.tobytes()
    assert a.parts.tobytes() == b.parts.tobytes()
    assert json.dumps(a.truth.to_json()) == json.dumps(b.truth.to_json())
    assert json.dumps(a.truth.to_json()) != json.dumps(c.truth.to_json())
    assert a.hu.dtype == np.float32 and a.labels.dtype == np.uint8 and a.parts.dtype == np.uint8


def test_lumbar_labels_parts_and_tissue() -> None:
    ph = generate(_coarse(5, "lumbar", include_t12=True, noise_hu=0.0))
    present = set(np.unique(ph.labels).tolist())
    for level in ph.spec.level_names:
        assert LEVEL_TO_LABEL[level] in present, level
    assert {int(PartId.PEDICLE_LEFT), int(PartId.PEDICLE_RIGHT)} <= set(
        np.unique(ph.parts).tolist()
    )
    facets = np.isin(ph.parts, [PartId.FACET_JOINT_LEFT, PartId.FACET_JOINT_RIGHT])
    assert facets.any() and not (ph.labels[facets] > 0).any()  # joint spaces hold no bone
    bone = ph.hu[ph.labels > 0]
    assert np.median(bone) > 100  # cancellous + cortex
    assert ph.hu.min() < -900  # air around the patient
    left = ph.parts == PartId.PEDICLE_LEFT
    x_left = (ph.affine @ np.c_[np.argwhere(left), np.ones(left.sum())].T)[0].mean()
    right = ph.parts == PartId.PEDICLE_RIGHT
    x_right = (ph.affine @ np.c_[np.argwhere(right), np.ones(right.sum())].T)[0].mean()
    assert x_left > x_right  # LPS: +x is the patient's left


@pytest.mark.parametrize("level", ["L2", "L5"])
def test_pedicle_width_at_isthmus_on_0p3mm_grid(level: str) -> None:
    spec = PhantomSpec.from_seed(4, "lumbar", noise_hu=0.0)
    vt = generate(spec.with_(spacing_mm=COARSE, fov_mm=200.0)).truth.vertebra(level)
    for ped in vt.pedicles:
        centre = np.array(ped.isthmus_centre)
        crop = spec.with_(
            spacing_mm=(0.3, 0.3, 0.3), shape=(70, 90, 90), centre_mm=ped.isthmus_centre
        )
        ph = generate(crop)
        field = smooth_mask(ph.labels, vt.label)
        width = chord(field, ph.affine, centre, np.array(ped.width_dir))
        assert abs(width - ped.width_mm) < 0.2, (level, ped.side, width, ped.width_mm)
        height_dir = np.cross(np.array(ped.axis), np.array(ped.width_dir))
        height = chord(field, ph.affine, centre, height_dir)
        assert abs(height - ped.height_mm) < 0.2, (level, ped.side, height, ped.height_mm)


def test_c2_mpd_on_label_map_matches_parameter() -> None:
    spec = PhantomSpec.from_seed(3, "cervical", noise_hu=0.0)
    truth = generate(spec.with_(spacing_mm=COARSE)).truth
    assert len(truth.c2) == 2
    for side in truth.c2:
        loc, axis = np.array(side.location), np.array(side.axis)
        ph = generate(
            spec.with_(spacing_mm=(0.25,) * 3, shape=(80, 80, 80), centre_mm=side.location)
        )
        field = smooth_mask(ph.labels, LEVEL_TO_LABEL["C2"])
        widths = [
            min_feret(field, ph.affine, loc + t * axis, axis) for t in np.arange(-4, 4.1, 1.0)
        ]
        assert abs(min(widths) - side.mpd_outer_mm) < 0.2, (side.side, widths, side.mpd_outer_mm)
        assert int(np.argmin(widths)) in (3, 4, 5)  # narrowest at the truth location
        assert side.mpd_endosteal_mm == pytest.approx(side.mpd_outer_mm - 2 * side.cortex_mm)
        assert side.risk_outer == ("low" if side.mpd_outer_mm >= 4.78 else "high")


def test_c2_width_spread_covers_both_risk_classes() -> None:
    widths = [
        w for seed in range(20) for w in PhantomSpec.from_seed(seed, "cervical").c2.outer_width
    ]
    assert min(widths) < 4.78 < max(widths)
    assert min(widths) >= 3.0 and max(widths) <= 8.0


def _angles(d: np.ndarray, vt: object, side: str) -> tuple[float, float]:
    s, a, r = (np.array(getattr(vt, k)) for k in ("s", "a", "r"))
    m = r if side == "left" else -r
    return math.degrees(math.atan2(d @ m, d @ a)), math.degrees(math.atan2(d @ s, d @ a))


def test_angles_in_truth_match_pedicle_voxels() -> None:
    spec = PhantomSpec.from_seed(8, "lumbar", noise_hu=0.0)
    truth = generate(spec.with_(spacing_mm=COARSE, fov_mm=200.0)).truth
    for level in ("L3", "L5"):
        vt = truth.vertebra(level)
        for ped in vt.pedicles:
            ph = generate(
                spec.with_(spacing_mm=(0.4,) * 3, shape=(50, 60, 60), centre_mm=ped.isthmus_centre)
            )
            field = smooth_mask(ph.labels, vt.label)
            axis, centre = np.array(ped.axis), np.array(ped.isthmus_centre)
            cents = np.array(
                [
                    section_centroid(field, ph.affine, centre + t * axis, axis)
                    for t in (-1.5, 0, 1.5)
                ]
            )
            _, _, vh = np.linalg.svd(cents - cents.mean(axis=0), full_matrices=False)
            d = vh[0] if vh[0] @ axis > 0 else -vh[0]
            pta, psa = _angles(d, vt, ped.side)
            assert abs(pta - ped.screw.pta_deg) < 2.0, (level, ped.side, pta, ped.screw.pta_deg)
            assert abs(psa - ped.screw.psa_deg) < 2.0, (level, ped.side, psa, ped.screw.psa_deg)


def test_vertebrae_tilt_by_segmental_lordosis() -> None:
    spec = _coarse(9, "lumbar", scoliosis_deg=0.0, axial_rotation_deg=0.0)
    truth = generate(spec).truth
    names = spec.level_names
    for upper, lower in itertools.pairwise(names):
        su, sl = np.array(truth.vertebra(upper).s), np.array(truth.vertebra(lower).s)
        angle = math.degrees(math.acos(float(np.clip(su @ sl, -1, 1))))
        assert angle == pytest.approx(
            abs(SEGMENTAL_LORDOSIS[upper]) * spec.lordosis_scale, abs=1e-6
        )
    s1 = np.array(truth.vertebra("S1").s)
    assert math.degrees(math.asin(-s1[1])) == pytest.approx(spec.sacral_slope_deg, abs=1e-6)


def test_reference_screw_follows_the_rules() -> None:
    ph = generate(_coarse(21, "lumbar"))
    for vt in ph.truth.vertebrae:
        bone = ph.anatomy.vertebra(vt.level)
        for ped in vt.pedicles:
            sc = ped.screw
            entry, exit_, tip = (np.array(p) for p in (sc.entry, sc.exit, sc.tip))
            assert abs(float(bone.sdf(entry[None])[0])) < 0.05
            assert abs(float(bone.sdf(exit_[None])[0])) < 0.05
            assert sc.channel_mm == pytest.approx(float(np.linalg.norm(exit_ - entry)), abs=1e-6)
            assert sc.length_mm in SCREW_LENGTHS and sc.diameter_mm in SCREW_DIAMETERS
            assert sc.length_mm <= 0.8 * sc.channel_mm or sc.length_mm == SCREW_LENGTHS[0]
            if sc.length_mm < SCREW_LENGTHS[-1]:
                assert sc.length_mm + 5 > 0.8 * sc.channel_mm
            radius_limit = min(ped.width_mm, ped.height_mm) / 2 - 0.5
            assert sc.diameter_mm / 2 <= radius_limit or sc.diameter_mm == SCREW_DIAMETERS[0]
            assert float(bone.sdf(tip[None])[0]) < 0  # the tip stays in bone
            pta, psa = _angles((tip - entry) / np.linalg.norm(tip - entry), vt, ped.side)
            assert pta == pytest.approx(sc.pta_deg, abs=1e-6) and psa == pytest.approx(
                sc.psa_deg, abs=1e-6
            )
        if vt.level != ph.spec.level_names[0]:
            assert {f.side for f in vt.facets_at_risk} == {"left", "right"}


def test_truth_json_round_trip_and_keys() -> None:
    truth = generate(_coarse(2, "cervical")).truth
    doc = truth.to_json()
    assert doc["frame"] == "LPS" and doc["part_ids"]["c2_isthmus_left"] == 5
    back = PhantomTruth.from_json(json.loads(json.dumps(doc)))
    assert json.dumps(back.to_json()) == json.dumps(doc)
    assert [c["side"] for c in doc["c2"]] == ["left", "right"]


def test_spec_overrides_and_errors() -> None:
    spec = PhantomSpec.from_seed(1, PhantomKind.LUMBAR, include_t12=False, include_l6=True)
    assert spec.level_names[0] == "L1" and "L6" in spec.level_names
    with pytest.raises(InferenceError):
        PhantomSpec.from_seed(1, "lumbar", no_such_parameter=3)
    with pytest.raises(InferenceError):
        PhantomSpec.from_seed(1, "lumbar", spacing_mm=(0.0, 1.0, 1.0))
    ph = generate(PhantomSpec.from_seed(1, "lumbar", spacing_mm=COARSE, shape=(20, 30, 40)))
    assert ph.hu.shape == (20, 30, 40)
    short = PhantomSpec.from_seed(1, "lumbar", spacing=COARSE, noise=0.0, rotation=3.0)
    assert short.spacing_mm == COARSE and short.noise_hu == 0.0 and short.axial_rotation_deg == 3.0


def test_isthmus_is_free_of_other_bone_over_many_seeds() -> None:
    """On the exact geometry, chords through the isthmus equal the pedicle width and height.

    Guards the anatomy layout: no articular process, lamina or transverse process may touch a
    pedicle within 1.5 mm of its isthmus, for any seed (T12 and L6 included).
    """
    specs = [
        PhantomSpec.from_seed(seed, "lumbar", include_t12=True, include_l6=seed % 3 == 0)
        for seed in [*range(20), 27]  # 27: a small L5 body far from its wide pedicles
    ]
    specs.append(
        PhantomSpec.from_seed(5, "full")
    )  # 5: small T1/T2 whose SAP nearly met T2's pedicle
    for spec in specs:
        seed = spec.seed
        for v in build_anatomy(spec).vertebrae:
            if v.level == "S1" or not v.pedicles or v.level == "C2":  # S1 merges with the ala
                continue
            for ped in v.pedicles:
                height_dir = np.cross(ped.axis, ped.width_dir)
                for t in (-1.5, 0.0, 1.5):
                    centre = ped.centre + t * ped.axis
                    for direction, expected in (
                        (ped.width_dir, ped.width),
                        (height_dir, ped.height),
                    ):
                        steps = np.arange(-30.0, 30.0, 0.02)
                        inside = v.sdf(centre + steps[:, None] * direction) < 0
                        i0 = len(steps) // 2
                        a = i0 - int(np.argmin(inside[i0::-1]))
                        b = i0 + int(np.argmin(inside[i0:]))
                        err = abs(steps[b] - steps[a] - expected)
                        assert err < 0.05, (seed, v.level, ped.side, t)
                if v.level.startswith("L") or v.level == "T12":  # channel ends on the body wall
                    _, exit_ = channel(v, ped)
                    body = next(part.shape for part in v.parts if part.name == "body")
                    assert abs(float(body.sdf(exit_[None])[0])) < 0.05, (seed, v.level, ped.side)


def test_full_spine_has_every_level_and_c2_truth() -> None:
    spec = PhantomSpec.from_seed(13, "full", spacing_mm=(4.0, 4.0, 4.0), noise_hu=0.0)
    ph = generate(spec)
    present = set(np.unique(ph.labels).tolist())
    expected = set(range(1, 20)) | {20, 21, 22, 23, 24, 26}
    assert expected <= present
    assert [c.side for c in ph.truth.c2] == ["left", "right"]
    levels = [v.level for v in ph.truth.vertebrae]
    assert levels[:3] == ["C1", "C2", "C3"] and levels[-1] == "S1" and "T6" in levels
    cranial = [float(np.array(ph.truth.vertebra(lv).body_centroid)[2]) for lv in ("C2", "T6", "L3")]
    assert cranial[0] > cranial[1] > cranial[2]  # head up (LPS +z)
    lungs = (ph.hu < -700) & (ph.labels == 0)
    assert lungs.sum() > 1000  # air-filled lungs around the thoracic spine


def test_oblique_grid_keeps_geometry_exact() -> None:
    """The same anatomy on a tilted acquisition grid: the pedicle width is still the parameter."""
    spec = PhantomSpec.from_seed(4, "lumbar", noise_hu=0.0)
    ped = generate(spec.with_(spacing_mm=COARSE, fov_mm=200.0)).truth.vertebra("L3").pedicles[0]
    oblique = spec.with_(
        spacing_mm=(0.35, 0.3, 0.3),
        shape=(60, 80, 80),
        centre_mm=ped.isthmus_centre,
        oblique_deg=(12.0, -7.0, 20.0),
    )
    ph = generate(oblique)
    cols = ph.affine[:3, :3] / np.linalg.norm(ph.affine[:3, :3], axis=0)
    assert abs(cols[:, 1] @ cols[:, 2]) < 1e-9 and abs(cols[:, 0] @ cols[:, 1]) < 1e-9
    assert abs(cols[2, 0]) < 0.99  # the slice axis is tilted away from LPS z
    field = smooth_mask(ph.labels, LEVEL_TO_LABEL["L3"])
    width = chord(field, ph.affine, np.array(ped.isthmus_centre), np.array(ped.width_dir))
    assert abs(width - ped.width_mm) < 0.2, (width, ped.width_mm)


def test_c2_isthmus_section_is_isolated_over_seeds() -> None:
    """On the exact geometry, the section ⊥ the C2 axis near the isthmus is one isolated ellipse
    whose minimum caliper width is the parameter (no facet, lamina or body touches it)."""
    g = np.arange(-9.0, 9.001, 0.1)
    uu, vv = np.meshgrid(g, g, indexing="ij")
    angles = np.radians(np.arange(0.0, 180.0, 1.0))
    for seed in range(6):
        c2 = build_anatomy(PhantomSpec.from_seed(seed, "cervical")).vertebra("C2")
        for comp in c2.pedicles:
            e2 = np.cross(comp.axis, comp.width_dir)
            for t in (-1.0, 0.0, 1.0):
                centre = comp.centre + t * comp.axis
                pts = centre + uu.reshape(-1, 1) * comp.width_dir + vv.reshape(-1, 1) * e2
                inside = (c2.sdf(pts) < 0).reshape(uu.shape)
                pieces, _ = ndimage.label(inside)
                keep = pieces == pieces[len(g) // 2, len(g) // 2]
                border = keep[0].any() or keep[-1].any() or keep[:, 0].any() or keep[:, -1].any()
                assert not border, (seed, comp.side, t)
                proj = np.stack([uu[keep], vv[keep]], 1) @ np.stack(
                    [np.cos(angles), np.sin(angles)]
                )
                width = float((proj.max(0) - proj.min(0)).min()) + 0.1
                assert abs(width - comp.width) < 0.12, (seed, comp.side, t, width, comp.width)


def test_facet_at_risk_lies_between_the_two_articular_processes() -> None:
    spec = PhantomSpec.from_seed(6, "lumbar", noise_hu=0.0)
    vt = generate(spec.with_(spacing_mm=COARSE, fov_mm=200.0)).truth.vertebra("L4")
    upper = LEVEL_TO_LABEL[vt.facets_at_risk[0].upper]
    assert vt.facets_at_risk[0].upper == "L3" and vt.facets_at_risk[0].lower == "L4"
    for facet in vt.facets_at_risk:
        centre, normal = np.array(facet.centre), np.array(facet.normal)
        ph = generate(spec.with_(spacing_mm=(0.4,) * 3, shape=(40, 40, 40), centre_mm=facet.centre))
        idx = np.rint(np.linalg.solve(ph.affine, np.r_[centre, 1.0])[:3]).astype(int)
        pid = PartId.FACET_JOINT_LEFT if facet.side == "left" else PartId.FACET_JOINT_RIGHT
        assert ph.parts[tuple(idx)] == pid
        along = [centre + t * normal for t in (-3.0, 3.0)]  # SAP side, IAP side
        got = [
            ph.labels[tuple(np.rint(np.linalg.solve(ph.affine, np.r_[p, 1.0])[:3]).astype(int))]
            for p in along
        ]
        assert got == [vt.label, upper], (facet.side, got)


def test_listhesis_slips_the_level_and_everything_above_forward() -> None:
    base = PhantomSpec.from_seed(10, "lumbar", listhesis_level=None)
    slipped = base.with_(listhesis_level="L5", listhesis_mm=6.0)
    a, b = build_anatomy(base), build_anatomy(slipped)
    shift = {lv: b.vertebra(lv).origin - a.vertebra(lv).origin for lv in ("S1", "L5", "L3")}
    ant = a.vertebra("L5").a
    # both are centred on the mean body centroid, so compare relative to S1
    for lv in ("L5", "L3"):
        np.testing.assert_allclose(shift[lv] - shift["S1"], 6.0 * ant, atol=1e-9)

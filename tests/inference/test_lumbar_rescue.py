"""The planner's rescues of a lumbar axis that holds no screw: the same axis moved parallel, the
anatomical prior through the same isthmus (draft.py; patient frame LPS mm)."""

from __future__ import annotations

import numpy as np
import pytest

from inference.errors import InferenceError
from inference.lumbar.draft import (
    RESCUE_BREACH_MM,
    Draft,
    VertebraModel,
    largest_clear,
    prior_draft,
    shifted_draft,
    sized,
    smallest_breach,
)
from inference.lumbar.frames import direction_from_angles, screw_angles, vertebra_anatomy
from inference.lumbar.isthmus import channel_along
from inference.results import Side
from inference.settings import PlanningSettings
from tests.inference.lumbar_helpers import make_vertebra


def _model(pedicle_radius: float) -> tuple[VertebraModel, np.ndarray]:
    v = make_vertebra((0.0, 0.0, 0.0), pta_deg=15.0, psa_deg=0.0, pedicle_radius=pedicle_radius)
    anatomy = vertebra_anatomy(v.mask, v.affine, v.frame.s, v.frame.a)
    return VertebraModel.build("L4", v.mask, v.affine, anatomy), v.isthmus["left"]


def test_an_axis_that_leaves_the_body_early_gives_way_to_the_prior_through_its_isthmus() -> None:
    model, isthmus = _model(4.5)
    settings = PlanningSettings()
    frame = model.anatomy.frame
    # the true isthmus, but an axis turned 45° lateral (a thrown fit): out of the body in ~20 mm
    wrong = direction_from_angles(frame, -30.0, 0.0, Side.LEFT)
    found = channel_along(model.inside, isthmus, wrong, 50.0)
    assert found.length - 2.0 < settings.lengths_mm[0]
    draft = prior_draft(model, Side.LEFT, found, settings)
    assert draft is not None
    assert draft.channel.length > 45.0
    pta, psa = screw_angles(frame, draft.screw.entry, draft.screw.tip, Side.LEFT)
    assert abs(pta - 15.0) < 6.0 and abs(psa) < 6.0
    assert smallest_breach(model, draft, settings) < RESCUE_BREACH_MM
    assert largest_clear(model, draft, settings) is not None
    # the surgeon is told the trajectory is the level's typical one, not the image's
    assert (
        draft.rescue is not None
        and "within 12° of this level's typical axis (PTA 14.5°, PSA 0°)" in draft.rescue
    )


def test_an_axis_a_voxel_off_a_thin_pedicle_is_moved_parallel_until_a_screw_clears() -> None:
    model, isthmus = _model(3.0)
    settings = PlanningSettings()
    frame = model.anatomy.frame
    axis = direction_from_angles(frame, 15.0, 0.0, Side.LEFT)
    off = channel_along(model.inside, isthmus + 1.5 * frame.s, axis, 30.0)
    draft = Draft(Side.LEFT, off, 40.0, 5.0)
    # on this axis even the smallest screw leaves the pedicle superiorly
    assert smallest_breach(model, draft, settings) >= RESCUE_BREACH_MM
    assert largest_clear(model, draft, settings) is None
    moved = shifted_draft(model, draft, settings)
    assert moved is not None
    assert float(np.linalg.norm(moved.channel.direction - axis)) < 1e-9  # parallel
    shift = moved.channel.isthmus - off.isthmus
    assert float(shift @ frame.s) < -0.4  # moved back towards the pedicle's centre
    assert smallest_breach(model, moved, settings) == 0.0
    assert moved.rescue is not None and "mm parallel to that axis" in moved.rescue
    assert draft.rescue is None


def test_a_channel_too_short_for_any_screw_says_how_long_it_is_and_what_is_needed() -> None:
    model, isthmus = _model(4.5)
    settings = PlanningSettings()
    wrong = direction_from_angles(model.anatomy.frame, -30.0, 0.0, Side.LEFT)
    found = channel_along(model.inside, isthmus, wrong, 50.0)
    with pytest.raises(InferenceError) as err:
        sized(model, Side.LEFT, found, settings)
    assert f"is {found.length:.1f} mm long" in str(err.value)
    assert "the shortest screw (30 mm) needs 32 mm" in str(err.value)

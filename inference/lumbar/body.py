"""The vertebral body of one vertebra mask.

Arrays are indexed [slice, row, col]; ``spacing`` is the voxel size (mm) along those axes.
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage

from inference.errors import InferenceError
from inference.geometry import BoolArray, FloatArray


def extract_body(mask: BoolArray, spacing: FloatArray) -> BoolArray:
    """The vertebral body of one vertebra mask: a morphological opening at the body's scale.

    The erosion radius is 70% of the largest inscribed radius (which lies in the body), so the
    pedicles and posterior elements, thinner than the body, fall away.
    """
    dt = ndimage.distance_transform_edt(mask, sampling=spacing)
    radius = 0.7 * float(dt.max())
    core = dt > radius
    labels, n = ndimage.label(core)
    if n == 0:
        raise InferenceError("vertebra mask too thin to find a body")
    seed = np.unravel_index(int(np.argmax(dt)), dt.shape)
    core = labels == labels[seed]
    grown = ndimage.distance_transform_edt(~core, sampling=spacing) <= radius + 0.5
    body: BoolArray = grown & mask
    return body

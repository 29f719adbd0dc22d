"""Imbalance-aware self-supervised 3D radiomics: 3DSiam with RE/SE, plus pyradiomics.

The science lives in :mod:`napari_ssl_radiomics.core` (no Qt, no napari); the napari dock
widgets in :mod:`napari_ssl_radiomics.widgets`; the ``ssl-radiomics`` command line in
:mod:`napari_ssl_radiomics.cli`.
"""

__version__ = "0.1.0"

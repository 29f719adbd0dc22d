"""The science of napari-ssl-radiomics, importable without Qt or napari."""

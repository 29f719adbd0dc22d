"""napari dock widgets: thin views over :mod:`napari_ssl_radiomics.core` (see each module).

The widgets of one viewer share a :class:`._state.State` (``get_state(viewer)``); long work
runs in napari ``thread_worker`` generators (:mod:`._workers`); every parameter control is
built from the config dataclasses (:mod:`._form`).
"""

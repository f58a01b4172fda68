"""Training, in-process prediction and decoding of the PatchPerPix network (torch lives here and in model.py).

Modules: ``targets`` (patch / numinst targets on the fly), ``losses``, ``sampling`` (crops from zarr samples),
``augment``, ``dataset`` (torch IterableDataset + DataLoader), ``train`` (:func:`run_train`), ``predict``
(:func:`predict_volume`, :func:`predict_tile`) and ``decode`` (:func:`decode_volume`). Import the submodules
directly; this package imports nothing heavy on its own.
"""

"""Training, per-tile prediction and decoding of the PatchPerPix network (torch lives here and in model.py).

Modules: ``targets`` (patch / numinst targets on the fly), ``losses``, ``sampling`` (crops from zarr samples),
``augment``, ``dataset`` (torch IterableDataset + DataLoader), ``train`` (:func:`run_train`), ``predict`` (the
tile geometry and :func:`predict_tile`; ``pipeline.predict`` tiles a volume with them) and ``decode``
(:func:`decode_volume`). Import the submodules directly; this package imports nothing heavy on its own.
"""

"""Raw intensity normalisation: ``(raw - offset) / scale`` per channel, the same numbers for every block.

``[data] normalization`` chooses how the two numbers of a channel are found:

* ``percentile``: the ``percentile_low`` and ``percentile_high`` percentiles (default 1 and 99.8, as csbdeep)
  of the volume, so that they map to 0 and 1; per sample in training, per volume in prediction;
* ``minmax``: the volume's minimum and maximum map to 0 and 1;
* ``dtype``: integer data divided by the dtype's maximum (uint16: 65535), floats as they are;
* ``fixed``: ``(raw - fixed_offset) / fixed_scale``, for volumes imaged with one setting;
* ``clip``: clip to [0, clip_max], divided by clip_max;
* ``none``: as stored (uint8 divided by 255).

``percentile`` and ``minmax`` read a strided subsample of the volume (at most :data:`SUBSAMPLE_VOXELS`
voxels: small blocks on a regular grid over the whole volume) once, before any block runs: every block, tile and
worker then uses the same two numbers, so blockwise prediction equals whole-volume prediction. :func:`fit` returns them
as a :class:`Normalizer`; :func:`as_fixed` writes them into ``[data]`` as ``normalization = "fixed"``, the
form the prediction stages and checkpoints carry.

Checkpoints record the normalisation settings they were trained with (:func:`settings_of`), and prediction
uses the checkpoint's settings (:func:`for_prediction`): a model always sees its inputs normalised the way
it was trained. ``[data] raw_padding`` says what lies outside the volume: its mirror image (the default) or
zeros; checkpoints without recorded settings were trained with zeros and are predicted so. A training input
whose normalised values span less than :data:`MIN_SPREAD` is refused (:func:`check_spread`): such an input is
nearly constant for the network, and nothing is learnt.
"""

from __future__ import annotations

import dataclasses
import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppp_dist.config.sections import DataConfig, PipelineConfig
from ppp_dist.errors import InputDataError

logger = logging.getLogger(__name__)

SUBSAMPLE_VOXELS = 4_000_000  # voxels per channel read to find percentile / minmax values
CUBE = 16  # side of the blocks the subsample reads
# Smallest span (max - min) of the normalised training input. The default augmentation shifts intensities by
# up to +-0.1; an input spanning less than that is nearly constant to the network (a 16-bit camera between
# 33,000 and 36,900 divided by 65,535 spans 0.06, and 2,000 iterations learnt nothing).
MIN_SPREAD = 0.1
SETTINGS_KEYS = ("normalization", "percentile_low", "percentile_high", "fixed_offset", "fixed_scale", "clip_max",
                 "shift_intensity", "raw_padding")
_FITTED = ("percentile", "minmax")


@dataclass(frozen=True)
class Normalizer:
    """``(raw - offset) / scale`` per channel (then clipped to [0, 1] for ``clip``, then 2x - 1 if ``shift``)."""

    offset: tuple[float, ...]
    scale: tuple[float, ...]
    clip: bool = False
    shift: bool = False
    divide_uint8: bool = False  # normalization = "none": uint8 is divided by 255
    mirror: bool = True  # raw outside the volume is the volume mirrored at its border (else zeros)

    def __call__(self, raw: np.ndarray) -> np.ndarray:
        """float32 normalised (C, ...) array of raw (C, ...)."""
        raw = np.asarray(raw)
        out = raw.astype(np.float32)
        if self.divide_uint8 and raw.dtype == np.uint8:
            out /= np.float32(255.0)
        shape = (-1,) + (1,) * (out.ndim - 1)
        offset = np.asarray(self.offset, np.float32).reshape(shape)
        scale = np.asarray(self.scale, np.float32).reshape(shape)
        if offset.size not in (1, out.shape[0]) or scale.size not in (1, out.shape[0]):
            raise InputDataError(f"[data] fixed_offset and fixed_scale give {offset.size} and {scale.size} values for "
                                 f"{out.shape[0]} channels; give one value, or one per channel")
        out = (out - offset) / scale
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        if self.shift:
            out = out * np.float32(2.0) - np.float32(1.0)
        return out


def strided_subsample(arr: Any, max_voxels: int = SUBSAMPLE_VOXELS, cube: int = CUBE) -> np.ndarray:
    """(C, N) float64 values of ``arr`` ((C, Z, Y, X) or (Z, Y, X)): all of it if it has at most ``max_voxels``
    voxels, else ``cube``-sided blocks on a regular (strided) grid over the whole volume, corners included,
    at most ``max_voxels`` in all.

    Small blocks, not single voxels at a stride: each block lies in one or two zarr chunks per axis, so a
    terabyte volume is sampled by reading some thousand chunks, not a strided plane through every chunk.
    """
    spatial = tuple(int(s) for s in arr.shape[-3:])
    if math.prod(spatial) <= max_voxels:
        values = np.asarray(arr[...])
        return values.reshape((1 if values.ndim == 3 else values.shape[0], -1)).astype(np.float64)
    side = tuple(min(cube, s) for s in spatial)
    budget = max(1, max_voxels // math.prod(side))
    per_axis = 1
    while math.prod(min(per_axis + 1, -(-s // c)) for s, c in zip(spatial, side)) <= budget:
        if all(per_axis + 1 > -(-s // c) for s, c in zip(spatial, side)):
            break
        per_axis += 1
    starts = [np.unique(np.linspace(0, s - c, min(per_axis, -(-s // c))).round().astype(int))
              for s, c in zip(spatial, side)]
    parts = []
    for z in starts[0]:
        for y in starts[1]:
            for x in starts[2]:
                block = np.asarray(arr[..., z:z + side[0], y:y + side[1], x:x + side[2]])
                parts.append(block.reshape((1 if block.ndim == 3 else block.shape[0], -1)))
    return np.concatenate(parts, axis=1).astype(np.float64)


def fit(arr: Any, data: DataConfig, what: str = "the raw volume") -> Normalizer:
    """The :class:`Normalizer` of ``[data]`` for the volume ``arr`` (values found once, from a subsample)."""
    mode = data.normalization
    dtype = np.dtype(arr.dtype)
    kw = {"shift": bool(data.shift_intensity), "mirror": data.raw_padding == "mirror"}
    if mode == "fixed":
        return Normalizer(tuple(data.fixed_offset), tuple(data.fixed_scale), **kw)
    if mode == "clip":
        return Normalizer((0.0,), (float(data.clip_max),), clip=True, **kw)
    if mode == "none":
        return Normalizer((0.0,), (1.0,), divide_uint8=True, **kw)
    if mode == "dtype":
        top = float(np.iinfo(dtype).max) if dtype.kind in "ui" else 1.0
        return Normalizer((0.0,), (top,), **kw)
    values = strided_subsample(arr)
    if mode == "minmax":
        low, high = values.min(axis=1), values.max(axis=1)
    else:
        low = np.percentile(values, data.percentile_low, axis=1)
        high = np.percentile(values, data.percentile_high, axis=1)
    span = high - low
    if np.any(~np.isfinite(span)) or np.any(span <= 0):
        c = int(np.argmin(np.where(np.isfinite(span), span, -1)))
        raise InputDataError(f"{what} is constant between its {_which(data)} (channel {c}: {low[c]:g} to "
                             f"{high[c]:g}), so {mode} normalisation cannot scale it; use [data] normalization = "
                             f"\"minmax\" or \"fixed\", or check the volume")
    return Normalizer(tuple(float(v) for v in low), tuple(float(v) for v in span), **kw)


def _which(data: DataConfig) -> str:
    if data.normalization == "minmax":
        return "minimum and maximum"
    return f"{data.percentile_low:g} and {data.percentile_high:g} percentiles"


def as_fixed(data: DataConfig, normalizer: Normalizer) -> DataConfig:
    """``[data]`` with ``normalizer``'s numbers as ``normalization = "fixed"`` (clip/none/dtype kept as they are:
    they need no values from the volume)."""
    if data.normalization not in _FITTED:
        return data
    return dataclasses.replace(data, normalization="fixed", fixed_offset=normalizer.offset,
                               fixed_scale=normalizer.scale)


def check_spread(arr: Any, normalizer: Normalizer, data: DataConfig, what: str) -> None:
    """InputDataError (one sentence, naming the option to use) if the normalised training input ``arr`` spans
    less than :data:`MIN_SPREAD`."""
    values = normalizer(strided_subsample(arr, SUBSAMPLE_VOXELS // 4))
    low, high = float(values.min()), float(values.max())
    if high - low < MIN_SPREAD:
        raise InputDataError(
            f"{what} is nearly constant after [data] normalization = \"{data.normalization}\": its values span only "
            f"{high - low:.3g} (from {low:.3g} to {high:.3g}; at least {MIN_SPREAD:g} is needed to learn anything); "
            f"use [data] normalization = \"percentile\", which maps the 1 and 99.8 percentiles of each sample to 0 "
            f"and 1")


def settings_of(data: DataConfig) -> dict[str, Any]:
    """The normalisation settings of ``[data]`` (what a checkpoint records)."""
    return {k: (list(v) if isinstance(v, tuple) else v) for k, v in
            ((k, getattr(data, k)) for k in SETTINGS_KEYS)}


def with_settings(data: DataConfig, settings: dict[str, Any] | None) -> DataConfig:
    """``[data]`` with the normalisation ``settings`` of a checkpoint (unchanged for None / old checkpoints)."""
    if not settings:
        return data
    values: dict[str, Any] = {k: tuple(v) if isinstance(v, list) else v for k, v in settings.items()
                              if k in SETTINGS_KEYS}
    changed = {k: v for k, v in values.items() if getattr(data, k) != v}
    if changed:
        logger.info("normalising as the checkpoint was trained: %s",
                    ", ".join(f"{k} = {v!r}" for k, v in sorted(changed.items())))
    return dataclasses.replace(data, **values)


def for_prediction(config: PipelineConfig, raw_spec: str, checkpoint: Any) -> PipelineConfig:
    """``config`` whose ``[data]`` normalises the volume ``raw_spec`` as ``checkpoint`` was trained, with the
    volume's numbers found once (``normalization = "fixed"``): what every prediction tile and block uses."""
    from ppp_dist.io.volumes import open_array
    from ppp_dist.learning.model import read_normalization

    settings = read_normalization(checkpoint)
    data = with_settings(config.data, settings)
    if settings is None and data.raw_padding != "zeros":  # trained before the settings were recorded: with zeros
        logger.info("%s records no normalisation settings (an older model): raw outside the volume is zero, as "
                    "in its training", checkpoint)
        data = dataclasses.replace(data, raw_padding="zeros")
    arr = open_array(raw_spec)
    normalizer = fit(arr, data, raw_spec)
    if data.normalization in _FITTED:
        logger.info("%s normalisation of %s: offset %s, scale %s", data.normalization, raw_spec,
                    _fmt(normalizer.offset), _fmt(normalizer.scale))
    return dataclasses.replace(config, data=as_fixed(data, normalizer))


def _fmt(values: tuple[float, ...]) -> str:
    return "[" + ", ".join(f"{v:.6g}" for v in values) + "]"


__all__ = ["MIN_SPREAD", "Normalizer", "as_fixed", "check_spread", "fit", "for_prediction", "settings_of",
           "strided_subsample", "with_settings"]

"""Tiled prediction (ppp_reference §2): the tile geometry and the pure per-tile functions.

``pipeline.predict`` cuts a volume into blocks of whole tiles and calls these per tile, on dask workers or
in this process (``pipeline.predict.predict_volume``): one tiler for both.

Tiling. The volume is cut into output tiles of the network's output size (valid padding) or of the input
size minus a margin per side (same padding; the margin is an upper bound of the network's receptive
context, rounded up to the downsampling grid, so cropped tiles equal a whole-volume pass). Each tile reads
its input with that context; outside the volume the (normalised) input is the volume mirrored at its
border. Valid-padding tiles stitch exactly, without overlap or blending; the last tile per axis is cropped
at the volume end, so any volume shape works.

Outputs (zarr v3 arrays, chunks dividing the output tile so that tiles write whole chunks):

* ``numinst`` (max_num_inst + 1, Z, Y, X) uint8 softmax probabilities x 255 (rounded), or ``fg`` (1, Z, Y, X)
  for ``numinst_head = "foreground"``;
* ``patches`` (P, Z, Y, X): sigmoid probabilities, uint8 (value / 255) or float16 per
  ``prediction.patch_dtype``; or, for ppp+dec, ``codes`` (K, Z, Y, X) float16 sigmoid codes.

:func:`predict_tile` is the pure per-tile function (network + input with context -> float arrays) that a
blockwise dask stage can call per block with a network from :func:`ppp_dist.learning.model.load_network`, reading
the input with :func:`read_input_tile` and quantising with :func:`to_storage`.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from ppp_dist.config.sections import DataConfig, ModelConfig
from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.geometry import Box
from ppp_dist.io.volumes import check_real, open_array
from ppp_dist.learning.model import (
    PppModel,
    effective_factors,
    effective_input_shape,
    expected_output_shape,
)
from ppp_dist.learning.normalize import fit
from ppp_dist.learning.sampling import read_normalised

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class TileGeometry:
    """Spatial (Z, Y, X) sizes of one prediction tile.

    ``input_shape`` is what the network reads, ``output_shape`` what is kept and written, ``context`` the
    input voxels per side around the kept output, ``net_crop`` what is cut per side from the raw network
    output (0 for valid padding; the margin for same padding).
    """

    input_shape: tuple[int, int, int]
    output_shape: tuple[int, int, int]
    context: tuple[int, int, int]
    net_crop: tuple[int, int, int]


def receptive_context(model: ModelConfig) -> tuple[int, int, int]:
    """Upper bound of the input voxels per side that one output voxel of the network depends on.

    Per level l at scale s_l = prod(factors[:l]): the encoder and decoder convolutions add
    ``num_repetitions * (kernel_size // 2) * s_l`` each, pooling and upsampling ``(f_l - 1) * s_l`` each
    (the window / phase), the bottom convolutions ``num_repetitions * (kernel_size // 2) * s_L``.
    """
    factors = effective_factors(model)
    conv = model.num_repetitions * (model.kernel_size // 2)
    out = []
    for axis in range(3):
        scale, radius = 1, 0
        for f in factors:
            radius += 2 * conv * scale + 2 * (f[axis] - 1) * scale
            scale *= f[axis]
        radius += conv * scale
        out.append(0 if axis == 0 and model.patch_shape[0] == 1 else radius)
    return tuple(out)  # type: ignore[return-value]


def tile_geometry(model: ModelConfig) -> TileGeometry:
    """The prediction tile of ``model.predict_input_shape`` (see the module docstring)."""
    inp = effective_input_shape(model, model.predict_input_shape)
    out = tuple(expected_output_shape(model, inp))
    if model.padding == "valid":
        return TileGeometry(inp, out, tuple((i - o) // 2 for i, o in zip(inp, out)), (0, 0, 0))  # type: ignore
    factors = effective_factors(model)
    total = [math.prod(f[a] for f in factors) for a in range(3)]
    margin = tuple(-(-c // t) * t for c, t in zip(receptive_context(model), total))
    kept = tuple(i - 2 * m for i, m in zip(inp, margin))
    if min(kept) < 1:
        raise ConfigError(f"[model] predict_input_shape {inp} leaves no output with padding = 'same': "
                          f"{margin} voxels per side are cropped; use a larger predict_input_shape")
    return TileGeometry(inp, kept, margin, margin)  # type: ignore[arg-type]


def flip_sets(input_shape: tuple[int, ...]) -> list[tuple[int, ...]]:
    """Every subset of the spatial axes (0 = Z, 1 = Y, 2 = X) longer than one voxel, the empty one first:
    the flips of test-time augmentation (4 in 2D, 8 in 3D)."""
    axes = [a for a, size in enumerate(input_shape) if size > 1]
    return [tuple(a for i, a in enumerate(axes) if mask >> i & 1) for mask in range(2 ** len(axes))]


def unflip_patches(patches: torch.Tensor, patch_shape: tuple[int, ...], axes: tuple[int, ...]) -> torch.Tensor:
    """Patches (N, P, Z, Y, X) predicted on an input flipped along spatial ``axes``, in the unflipped frame:
    the voxels flip back, and so does each patch's own (pz, py, px) window."""
    n, p, *spatial = patches.shape
    full = patches.reshape(n, *patch_shape, *spatial)
    full = torch.flip(full, dims=[1 + a for a in axes] + [4 + a for a in axes])
    return full.reshape(n, p, *spatial)


def _activations(net: PppModel, x: torch.Tensor, geometry: TileGeometry, amp: bool,
                 batch: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    """(patch or code probabilities, numinst probabilities) of the kept output of one forward pass."""
    with torch.no_grad(), torch.autocast(device_type=x.device.type, dtype=torch.float16,
                                         enabled=amp and x.device.type == "cuda"):
        patch_logits, numinst_logits = net(x)
    crop = tuple(slice(c, c + o) for c, o in zip(geometry.net_crop, geometry.output_shape))
    patch_logits = patch_logits[(Ellipsis, *crop)].float()
    numinst_logits = numinst_logits[(Ellipsis, *crop)].float()
    if not bool(torch.isfinite(patch_logits).all() and torch.isfinite(numinst_logits).all()):
        top = float(np.abs(batch).max()) if batch.size else 0.0
        raise InputDataError(f"the network's output holds NaN or infinite values (input values up to {top:.3g}): "
                             "raw values this large overflow the network (set [data] normalization to clip or "
                             "minmax), or the checkpoint's weights are damaged; nothing of this tile was stored")
    numinst = torch.softmax(numinst_logits, dim=1) if numinst_logits.shape[1] > 1 else torch.sigmoid(numinst_logits)
    return torch.sigmoid(patch_logits), numinst


def predict_tile(net: PppModel, raw: np.ndarray, geometry: TileGeometry, *, amp: bool = False,
                 flips: bool = False) -> dict[str, np.ndarray]:
    """Network activations for one input tile (or a batch of them); a pure function.

    Parameters
    ----------
    net : the network (eval mode), on its device.
    raw : (C, *geometry.input_shape) or (N, C, *geometry.input_shape) float32 normalised input with context.
    geometry : the tile geometry of ``net``.
    amp : float16 autocast (CUDA only).
    flips : test-time flips (``[prediction] test_time_flips``): the probabilities are the mean over the input
        flipped along every subset of its spatial axes (:func:`flip_sets`), each flipped back, patch windows
        included (the tile's context is the same on both sides). Needs patches, not ppp+dec codes.

    Returns
    -------
    dict of float32 arrays of shape ([N,] channels, *geometry.output_shape): ``numinst`` (softmax) or ``fg``
    (sigmoid), and ``patches`` or ``codes`` (sigmoid).
    """
    single = raw.ndim == 4
    batch = raw[None] if single else raw
    if tuple(batch.shape[2:]) != tuple(geometry.input_shape):
        raise ValueError(f"input tile of spatial shape {tuple(batch.shape[2:])} does not match the network input "
                         f"{geometry.input_shape}")
    device = next(net.parameters()).device
    x = torch.from_numpy(np.ascontiguousarray(batch, dtype=np.float32)).to(device)
    patches, numinst = _activations(net, x, geometry, amp, batch)
    if flips:
        if net.decoder is not None:
            raise ConfigError("[prediction] test_time_flips needs predicted patches; ppp+dec codes cannot be flipped")
        patch_shape = tuple(net.arch["patch_shape"])
        sets = flip_sets(geometry.input_shape)
        for axes in sets[1:]:  # sets[0] is no flip: the pass above
            dims = [2 + a for a in axes]
            p, n = _activations(net, torch.flip(x, dims=dims), geometry, amp, batch)
            patches += unflip_patches(p, patch_shape, axes)
            numinst += torch.flip(n, dims=dims)
        patches, numinst = patches / len(sets), numinst / len(sets)
    out = {"numinst" if numinst.shape[1] > 1 else "fg": numinst.cpu().numpy(),
           "patches" if net.decoder is None else "codes": patches.cpu().numpy()}
    return {k: v[0] if single else v for k, v in out.items()}


def to_storage(name: str, values: np.ndarray, patch_dtype: str = "uint8") -> np.ndarray:
    """Stored form of ``predict_tile`` outputs: probabilities x 255 as uint8, or float16 (codes always)."""
    if name == "codes" or (name == "patches" and patch_dtype == "float16"):
        return values.astype(np.float16)
    return np.rint(np.clip(values, 0.0, 1.0) * 255.0).astype(np.uint8)


def read_input_tile(arr: Any, write_box: Box, geometry: TileGeometry, data: DataConfig) -> np.ndarray:
    """(C, *geometry.input_shape) float32 network input for the output tile starting at ``write_box.begin``.

    ``arr`` is the raw (C, Z, Y, X) or (Z, Y, X) zarr array; the input is normalised with ``[data]`` (give it
    ``normalize.for_prediction``'s fixed numbers, so every tile uses the same) and mirrored at the volume
    border (``sampling.read_normalised``). ``write_box`` may be smaller than the output tile (at the volume end).
    """
    begin = tuple(b - c for b, c in zip(write_box.begin, geometry.context))
    box = Box(begin, tuple(b + i for b, i in zip(begin, geometry.input_shape)))
    return read_normalised(arr, box, fit(arr, data))


def open_raw(input_spec: str, data: DataConfig) -> tuple[Any, int, tuple[int, ...]]:
    """The raw volume ``input_spec`` checked against ``[data]``: (array, channels, spatial (Z, Y, X))."""
    arr = open_array(input_spec)
    if arr.ndim not in (3, 4):
        raise InputDataError(f"{input_spec} must be a (C, Z, Y, X) or (Z, Y, X) raw volume, got shape {arr.shape}")
    channels = 1 if arr.ndim == 3 else int(arr.shape[0])
    if channels != data.num_channels:
        raise InputDataError(f"{input_spec} has {channels} channels but [data] num_channels = "
                             f"{data.num_channels}; set num_channels or give the right volume")
    check_real(arr, input_spec)
    return arr, channels, tuple(int(s) for s in arr.shape[-3:])


__all__ = ["TileGeometry", "tile_geometry", "receptive_context", "read_input_tile", "predict_tile", "to_storage",
           "flip_sets", "unflip_patches",
           "open_raw"]

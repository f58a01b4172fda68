"""Decode step of ppp+dec (ppp_reference §3): predicted codes -> patch probabilities.

:func:`decode_volume` reads ``codes`` (K, Z, Y, X) and ``numinst`` (3, Z, Y, X) / ``fg`` (1, Z, Y, X) from a
prediction store, decodes only foreground voxels, and writes ``patches`` (P, Z, Y, X) with **the sigmoid
applied** (the original HEAD stored logits, §3). Foreground: ``P(background) = numinst[0] / 255 < 1 -
decode_foreground_threshold`` (i.e. P(foreground) > threshold), or ``fg / 255 >= threshold`` for a
foreground head. Other voxels hold 0 ("not in the instance"). Work is done in blocks of the code chunks
(whole chunks of the output), voxels in batches of ``decoder.decode_batch_size``.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ppp_dist import __version__
from ppp_dist.config.sections import PipelineConfig
from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.geometry import tile
from ppp_dist.io.volumes import choose_chunks, list_arrays, open_array, prepare_array, read_box, write_box
from ppp_dist.learning.model import load_network
from ppp_dist.learning.predict import to_storage

logger = logging.getLogger(__name__)


def decode_codes(decoder: torch.nn.Module, codes: np.ndarray, batch_size: int = 1024) -> np.ndarray:
    """(n, P) float32 patch probabilities ``sigmoid(decoder(code))`` of (n, K) sigmoid codes; a pure function."""
    device = next(decoder.parameters()).device
    out = np.empty((len(codes), 0), dtype=np.float32)
    parts = []
    with torch.no_grad():
        for first in range(0, len(codes), batch_size):
            batch = torch.from_numpy(np.ascontiguousarray(codes[first:first + batch_size], dtype=np.float32))
            parts.append(torch.sigmoid(decoder(batch.to(device)).float()).cpu().numpy())
    return np.concatenate(parts) if parts else out


def foreground_mask(numinst: np.ndarray, threshold: float) -> np.ndarray:
    """Voxels to decode from stored (uint8 x 255) numinst (3, ...) or fg (1, ...) probabilities."""
    prob = numinst.astype(np.float32) / 255.0 if numinst.dtype == np.uint8 else numinst.astype(np.float32)
    if prob.shape[0] > 1:
        return prob[0] < 1.0 - threshold
    return prob[0] >= threshold


def decode_volume(config: PipelineConfig, checkpoint: Path | str, prediction_store: Path | str) -> dict[str, Any]:
    """Decode ``codes`` of ``prediction_store`` into ``patches`` (uint8 value/255 or float16).

    Returns ``{"output", "blocks", "voxels_decoded", "seconds"}``.
    """
    started = time.perf_counter()
    if config.model.head != "codes":
        raise ConfigError("decode needs [model] head = 'codes' (ppp+dec); with head = 'patches' the prediction "
                          "holds patches already")
    store = Path(prediction_store)
    names = list_arrays(store) if store.exists() else []
    if "codes" not in names:
        raise InputDataError(f"{store} holds no 'codes' array (found {names or 'nothing'}); run predict first")
    ni_name = "numinst" if "numinst" in names else "fg"
    codes, numinst = open_array(f"{store}/codes"), open_array(f"{store}/{ni_name}")
    net = load_network(config.model, config.data.num_channels, checkpoint, config.prediction.device)
    decoder = net.decoder
    assert decoder is not None  # head = "codes" (checked above) builds the decoder
    spatial = tuple(int(s) for s in codes.shape[1:])
    block = tuple(int(c) for c in codes.chunks[1:])
    patch_channels = int(np.prod(config.model.patch_shape))
    dtype = config.prediction.patch_dtype
    chunks = choose_chunks(spatial, block, channels=patch_channels, itemsize=np.dtype(dtype).itemsize)
    out = prepare_array(f"{store}/patches", shape=(patch_channels,) + spatial, chunks=(patch_channels,) + chunks,
                        dtype=dtype, overwrite=config.general.overwrite, axes="czyx",
                        attrs={"ppp_dist": {"version": __version__, "stage": "decode", "checkpoint": str(checkpoint)},
                               "encoding": "value / 255" if dtype == "uint8" else "value"})
    threshold = config.prediction.decode_foreground_threshold
    specs = tile(spatial, block)
    decoded = 0
    for spec in specs:
        mask = foreground_mask(read_box(numinst, spec.write_box), threshold)
        dense = np.zeros((patch_channels,) + spec.write_box.shape, dtype=dtype)
        if mask.any():
            code = read_box(codes, spec.write_box)[:, mask].T  # (n, K)
            probs = decode_codes(decoder, code, config.model.decoder.decode_batch_size)
            dense[:, mask] = to_storage("patches", probs.T, dtype)
            decoded += int(mask.sum())
        write_box(out, spec.write_box, dense)
    seconds = time.perf_counter() - started
    logger.info("decoded %d foreground voxels of %s in %d blocks in %.1f s", decoded, store, len(specs), seconds)
    return {"output": f"{store}/patches", "blocks": len(specs), "voxels_decoded": decoded, "seconds": seconds}


__all__ = ["decode_volume", "decode_codes", "foreground_mask"]

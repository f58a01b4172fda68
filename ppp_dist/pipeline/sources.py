"""Where the vote and paint stages get a block's patches: stored, or computed on the fly (fused mode).

Every source returns, for a box of the volume, the patches ``(P, *box)`` in their stored dtype and numinst
``(*box)`` uint8 0/1/2 — bit for bit what reading the stored prediction of that box gives, so the fused
result equals the stored-prediction result (and the whole-volume ``ops.assemble``).

* :class:`StoredPrediction` — a prediction group written by predict (and decode): ``patches`` + ``numinst``/``fg``.
* :class:`NetworkPrediction` — fused predict (→ decode for ppp+dec): the network runs on the tiles of the
  whole-volume tiling that cover the box, exactly as the predict stage would, and nothing is stored. Only
  the vote stage reads a source (paint uses what vote saved), but every vote block predicts its whole read
  box rounded out to those tiles: the network runs ``plan.network_ratio`` times per voxel (2-27x,
  depending on block, halo and tile), against 1x for the stored prediction; the storage of the patches
  (P bytes per voxel, less with zeroed background) goes to zero.
* :class:`OraclePatches` — patches made from instance labels (what a perfect network predicts), also
  computed per block: the benchmark and test stand-in for a network on volumes whose stored patches
  would not fit (125 x 512^3 bytes = 16.7 GB for 5^3 patches).

``has_foreground(box)`` lets a block without foreground skip its patches (a numinst read instead of P
channels; what the original's foreground bounding box saved). Sources are small frozen dataclasses (paths and
settings) so stages stay picklable; arrays and networks are opened once per worker process.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from typing import TYPE_CHECKING, Any

import numpy as np

from ppp_dist.geometry import Box

if TYPE_CHECKING:
    from ppp_dist.config.sections import ModelConfig, PipelineConfig
    from ppp_dist.learning.model import PppModel
    from ppp_dist.pipeline.settings import AssemblySettings

Shape = tuple[int, int, int]


@lru_cache(maxsize=8)
def _open(path: str) -> Any:
    from ppp_dist.io.volumes import open_array

    return open_array(path)


def to_numinst(n: np.ndarray, settings: AssemblySettings, spatial: tuple[int, ...]) -> np.ndarray:
    """Stored numinst/fg values (uint8 x 255 or float) -> uint8 0/1/2, as the whole-volume path converts."""
    from ppp_dist.ops.consensus import numinst_from_prob

    if n.dtype != np.uint8:
        n = n.astype(np.float32, copy=False)
    return numinst_from_prob(n, settings.numinst_thresholds, spatial, settings.foreground_threshold)


@dataclass(frozen=True)
class StoredPrediction:
    """A stored prediction: ``patches`` (P, Z, Y, X) and ``numinst`` (3, ...) or ``fg`` (1, ...) arrays."""

    patches: str
    numinst: str

    def volume_shape(self, settings: AssemblySettings) -> Shape:
        from ppp_dist.learning.background import check_zeroed
        from ppp_dist.pipeline.settings import check_prediction

        where = self.patches.rsplit("/", 1)[0]
        shape = check_prediction(_open(self.patches), _open(self.numinst), settings.patch_shape, where)
        fg = settings.foreground_threshold if _open(self.numinst).shape[0] == 1 else None  # one fg channel
        check_zeroed(_open(self.patches).attrs, settings.numinst_thresholds, f"{where}/patches", fg)
        return shape

    def read(self, box: Box, settings: AssemblySettings) -> tuple[np.ndarray, np.ndarray]:
        from ppp_dist.io.volumes import read_box

        p = read_box(_open(self.patches), box)
        return p, to_numinst(read_box(_open(self.numinst), box), settings, p.shape[1:])

    def has_foreground(self, box: Box, settings: AssemblySettings) -> bool:
        """Whether ``box`` holds a foreground voxel (reads numinst only: 1-3 bytes per voxel, not P)."""
        from ppp_dist.io.volumes import read_box

        return bool(to_numinst(read_box(_open(self.numinst), box), settings, box.shape).any())

    def describe(self) -> dict[str, Any]:
        return {"kind": "stored", "patches": self.patches, "numinst": self.numinst}


def _oracle_rows(labels: np.ndarray, patch_shape: Any, offset: np.ndarray, coords: np.ndarray) -> np.ndarray:
    """Oracle patch rows (x 255) of box voxels ``coords``: the labels are the box grown by h (``offset``)."""
    from ppp_dist.ops.patches import patch_target_rows

    return patch_target_rows(labels, patch_shape, np.asarray(coords, np.int64) + offset, 255)


@dataclass(frozen=True)
class OraclePatches:
    """Patches and numinst made from instance labels (K, Z, Y, X) or (Z, Y, X) per box, stored as uint8 x 255."""

    labels: str

    def volume_shape(self, settings: AssemblySettings) -> Shape:
        from ppp_dist.errors import InputDataError

        arr = _open(self.labels)
        if arr.ndim not in (3, 4) or not np.issubdtype(arr.dtype, np.integer):
            raise InputDataError(f"{self.labels} must hold integer instance labels (K, Z, Y, X) or (Z, Y, X); got "
                                 f"{arr.dtype} {arr.shape}")
        return tuple(int(s) for s in arr.shape[-3:])  # type: ignore[return-value]

    def read(self, box: Box, settings: AssemblySettings) -> tuple[Any, np.ndarray]:
        """``(patches, numinst)``; the patches as ``ops.SparsePatches``: rows computed per voxel on demand,
        the values the dense oracle would hold there (the steps read foreground voxels' patches only)."""
        from functools import partial

        from ppp_dist.io.volumes import read_box
        from ppp_dist.ops._geometry import SparsePatches
        from ppp_dist.ops.patches import numinst_target

        # a patch at v reads labels within h of v; outside the volume is background for both
        grown = box.grow(settings.h).intersect(Box.from_shape(self.volume_shape(settings)))
        labels = read_box(_open(self.labels), grown)
        inner = box.relative_to(grown)
        offset = np.array([s.start for s in inner], dtype=np.int64)
        patches = SparsePatches((int(np.prod(settings.patch_shape)),) + box.shape, np.dtype(np.uint8),
                                partial(_oracle_rows, labels, settings.patch_shape, offset))
        inner_labels = labels[(slice(None), *inner)] if labels.ndim == 4 else labels[inner]
        count = numinst_target(inner_labels, settings.max_num_inst)
        # the stored oracle is numinst one-hot x 255 (uint8): numinst_from_prob sees probabilities 0 or 1,
        # so class 1 where P(1) = 1 > t1, then class 2 where P(>= 2) = 1 > t2 -- computed here without the stack
        t1, t2 = (float(t) for t in settings.numinst_thresholds)
        numinst = np.zeros(count.shape, np.uint8)
        if 1.0 > t1:
            numinst[count == 1] = 1
        if 1.0 > t2:
            numinst[count >= 2] = 2
        return patches, numinst

    def has_foreground(self, box: Box, settings: AssemblySettings) -> bool:
        from ppp_dist.io.volumes import read_box

        return bool(np.any(read_box(_open(self.labels), box)))

    def describe(self) -> dict[str, Any]:
        return {"kind": "oracle", "labels": self.labels}


@lru_cache(maxsize=2)
def _network(model: ModelConfig, channels: int, checkpoint: str, device: str) -> PppModel:
    from ppp_dist.learning.model import load_network

    return load_network(model, channels, checkpoint, device)


@dataclass(frozen=True)
class NetworkPrediction:
    """Fused predict (-> decode): the tiles of the whole-volume tiling that cover a box, predicted on demand."""

    config: PipelineConfig
    raw: str
    checkpoint: str
    torch_threads: int | None = None

    def volume_shape(self, settings: AssemblySettings) -> Shape:
        from ppp_dist.learning.predict import open_raw

        return open_raw(self.raw, self.config.data)[2]  # type: ignore[return-value]

    def read(self, box: Box, settings: AssemblySettings) -> tuple[np.ndarray, np.ndarray]:
        import torch

        from ppp_dist.learning.decode import decode_codes, foreground_mask
        from ppp_dist.learning.predict import tile_geometry, to_storage
        from ppp_dist.pipeline.predict import predict_box

        cfg = self.config
        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        raw = _open(self.raw)
        channels = 1 if raw.ndim == 3 else int(raw.shape[0])
        net = _network(cfg.model, channels, self.checkpoint, cfg.prediction.device)
        geometry = tile_geometry(cfg.model)
        decoder = net.decoder  # ppp+dec (head = "codes"): the patches are decoded from the predicted codes
        patch_dtype = cfg.prediction.patch_dtype
        volume = self.volume_shape(settings)
        # the tiles of the whole-volume tiling (origin 0, step = output tile) that intersect the box
        out = geometry.output_shape
        lo = [b // o * o for b, o in zip(box.begin, out)]
        hi = [min(-(-e // o) * o, v) for e, o, v in zip(box.end, out, volume)]
        cover = Box(tuple(lo), tuple(hi))
        patch_channels = int(np.prod(cfg.model.patch_shape))
        region = predict_box(net, raw, cover, cfg)
        inner = (slice(None), *box.relative_to(cover))
        ni_name = "numinst" if "numinst" in region else "fg"
        ni = np.ascontiguousarray(region[ni_name][inner])
        if decoder is not None:
            mask = foreground_mask(ni, cfg.prediction.decode_foreground_threshold)
            patches = np.zeros((patch_channels,) + box.shape, dtype=patch_dtype)
            if mask.any():
                code = region["codes"][inner][:, mask].T
                probs = decode_codes(decoder, code, cfg.model.decoder.decode_batch_size)
                patches[:, mask] = to_storage("patches", probs.T, patch_dtype)
        else:
            patches = np.ascontiguousarray(region["patches"][inner])
        return patches, to_numinst(ni, settings, box.shape)

    def has_foreground(self, box: Box, settings: AssemblySettings) -> bool:
        return True  # unknown before the network has run

    def describe(self) -> dict[str, Any]:
        return {"kind": "network", "raw": self.raw, "checkpoint": self.checkpoint}


PatchSource = StoredPrediction | OraclePatches | NetworkPrediction

__all__ = ["NetworkPrediction", "OraclePatches", "PatchSource", "StoredPrediction", "to_numinst"]

"""The predict stage: raw -> numinst/fg + patches (or codes), whole output chunks per block; the one tiler.

Each block is a whole number of prediction tiles (``learning.predict.tile_geometry``) of the whole-volume
tiling, and :func:`predict_box` runs the network on those tiles (inputs with context, batches of
``[prediction] batch_size``, quantisation). On dask, :class:`PredictStage` runs one task per block (the
network is loaded once per worker process: ``model.load_network`` is cached); in this process,
:func:`predict_volume` runs the same blocks in order. The fused mode (``pipeline.sources.NetworkPrediction``)
calls :func:`predict_box` inside its vote and paint blocks. Outputs are prepared on the driver
(:func:`prepare_outputs`) with chunks that divide the tile, hence every block.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from ppp_dist.errors import ConfigError
from ppp_dist.geometry import BlockGrid, BlockSpec, tile

if TYPE_CHECKING:
    from ppp_dist.config.sections import PipelineConfig

logger = logging.getLogger(__name__)

STAGE = "predict"


def block_shape_for(config: PipelineConfig, block_shape: tuple[int, int, int] | None = None) -> tuple[int, int, int]:
    """The predict block: ``block_shape`` (default [vote] block_shape) rounded up to whole prediction tiles."""
    from ppp_dist.learning.predict import tile_geometry

    out = tile_geometry(config.model).output_shape
    want = tuple(block_shape or config.vote.block_shape)
    return tuple(max(1, -(-int(w) // o)) * o for w, o in zip(want, out))  # type: ignore[return-value]


def output_names(config: PipelineConfig, num_channels: int) -> dict[str, tuple[int, str]]:
    """``name -> (channels, dtype)`` of the prediction outputs of this model."""
    from ppp_dist.learning.model import architecture

    arch = architecture(config.model, num_channels)
    numinst_name = "numinst" if arch["numinst_channels"] > 1 else "fg"
    codes = config.model.head == "codes"
    patch_dtype = "float16" if codes else config.prediction.patch_dtype
    return {numinst_name: (arch["numinst_channels"], "uint8"),
            ("codes" if codes else "patches"): (arch["out_channels"], patch_dtype)}


def prepare_outputs(config: PipelineConfig, raw: str, output_group: str, checkpoint: str) -> dict[str, str]:
    """Create (or reuse) the prediction arrays in ``output_group``; return name -> array path."""
    from ppp_dist import __version__
    from ppp_dist.io.volumes import choose_chunks, prepare_array
    from ppp_dist.learning.background import zeroed_attrs
    from ppp_dist.learning.predict import open_raw, tile_geometry

    _, channels, spatial = open_raw(raw, config.data)
    geometry = tile_geometry(config.model)
    attrs = {"ppp_dist": {"version": __version__, "stage": "predict", "checkpoint": str(checkpoint),
                          "input": str(raw), "patch_shape": list(config.model.patch_shape)}}
    out = {}
    for name, (ch, dtype) in output_names(config, channels).items():
        chunks = choose_chunks(spatial, geometry.output_shape, channels=ch, itemsize=np.dtype(dtype).itemsize)
        scale = "value / 255" if dtype == "uint8" else "value"
        extra = {"ppp_dist": {**attrs["ppp_dist"], **zeroed_attrs(config)}} if name == "patches" else attrs
        prepare_array(f"{output_group}/{name}", shape=(ch,) + spatial, chunks=(ch,) + tuple(chunks), dtype=dtype,
                      overwrite=config.general.overwrite, axes="czyx", attrs={**extra, "encoding": scale})
        out[name] = f"{output_group}/{name}"
    return out


def predict_box(net: Any, raw: Any, box: Any, config: PipelineConfig) -> dict[str, np.ndarray]:
    """Stored-form outputs (name -> (C, *box)) of the network on ``box``, a whole number of output tiles of
    the whole-volume tiling (clipped at the volume end), in batches of ``[prediction] batch_size`` tiles.
    Used by the predict stage (on dask or in this process) and the fused mode."""
    from ppp_dist.learning.background import zero_background
    from ppp_dist.learning.predict import predict_tile, read_input_tile, tile_geometry, to_storage

    geometry = tile_geometry(config.model)
    amp = config.training.use_amp and next(net.parameters()).device.type == "cuda"
    tiles = [t.write_box.shift(box.begin) for t in tile(box.shape, geometry.output_shape)]
    result: dict[str, np.ndarray] = {}
    for first in range(0, len(tiles), config.prediction.batch_size):
        boxes = tiles[first:first + config.prediction.batch_size]
        inputs = np.stack([read_input_tile(raw, b, geometry, config.data) for b in boxes])
        values = predict_tile(net, inputs, geometry, amp=amp, flips=config.prediction.test_time_flips)
        for i, b in enumerate(boxes):
            keep = (slice(None), *(slice(0, s) for s in b.shape))
            tile_out = {name: to_storage(name, v[i][keep], config.prediction.patch_dtype) for name, v in values.items()}
            if config.prediction.zero_background:
                tile_out = zero_background(tile_out, config.vote.numinst_thresholds,
                                           config.vote.foreground_threshold)
            for name, stored in tile_out.items():
                if name not in result:
                    result[name] = np.zeros((stored.shape[0],) + box.shape, stored.dtype)
                result[name][(slice(None), *b.relative_to(box))] = stored
    return result


@dataclass(frozen=True)
class PredictStage:
    """The predict stage (picklable: config sections and paths): raw -> the prediction arrays, whole tiles."""

    config: PipelineConfig
    raw: str
    outputs: tuple[tuple[str, str], ...]  # (name, array path), prepared by :meth:`create`
    checkpoint: str
    torch_threads: int | None = None
    block_shape: tuple[int, int, int] | None = None  # default [vote] block_shape (rounded to whole tiles)
    outputs_group: str = ""  # the prediction group the outputs are in
    volume_shape: tuple[int, int, int] | None = None  # (Z, Y, X) of the raw, read once by :meth:`create`
    name = STAGE

    @classmethod
    def create(cls, config: PipelineConfig, raw: str, prediction: str, checkpoint: str, *,
               torch_threads: int | None = None, block_shape: tuple[int, int, int] | None = None) -> PredictStage:
        """Prepare the prediction arrays in the group ``prediction`` (chunks that divide the blocks)."""
        from ppp_dist.geometry import check_chunk_alignment
        from ppp_dist.io.volumes import open_array

        outputs = prepare_outputs(config, raw, prediction, checkpoint)
        arrays = {path: open_array(path) for path in outputs.values()}
        z, y, x = (int(s) for s in next(iter(arrays.values())).shape[1:])  # the raw's spatial shape
        stage = cls(config, raw, tuple(sorted(outputs.items())), checkpoint, torch_threads, block_shape, prediction,
                    (z, y, x))
        grid = stage.grid()
        for path, arr in arrays.items():
            check_chunk_alignment(grid.block_shape, arr.chunks[1:], arr.shape[1:], path)
        return stage

    @property
    def resources(self) -> dict[str, float] | None:
        return {"GPU": 1} if self.config.cluster.kind == "cuda" else None

    def grid(self) -> BlockGrid:
        if self.volume_shape is None:
            raise ValueError("PredictStage.grid needs volume_shape (PredictStage.create reads it)")
        return BlockGrid(self.volume_shape, block_shape_for(self.config, self.block_shape))

    def params(self) -> dict[str, Any]:
        return {"raw": self.raw, "checkpoint": self.checkpoint, "block": self.grid().block_shape}

    def prepare(self, fresh: bool) -> None:
        """Nothing: the arrays were prepared by :meth:`create`, and every block writes whole chunks."""

    def forget(self, store: Any) -> None:
        store.reset_blocks(self.name)

    def finalize(self) -> None:
        """Nothing to do after the blocks."""

    def process_block(self, block: BlockSpec) -> dict[str, Any]:
        import torch

        from ppp_dist.io.volumes import open_array, write_box
        from ppp_dist.learning.model import load_network
        from ppp_dist.learning.predict import tile_geometry

        if self.torch_threads:
            torch.set_num_threads(int(self.torch_threads))
        cfg = self.config
        raw = open_array(self.raw)
        channels = 1 if raw.ndim == 3 else int(raw.shape[0])
        net = load_network(cfg.model, channels, self.checkpoint, cfg.prediction.device)
        arrays = {name: open_array(path, "r+") for name, path in self.outputs}
        core = block.write_box  # whole tiles of the whole-volume tiling (block_shape_for)
        for name, data in predict_box(net, raw, core, cfg).items():
            write_box(arrays[name], core, data)
        return {"voxels": int(np.prod(core.shape)),
                "tiles": len(tile(core.shape, tile_geometry(cfg.model).output_shape))}


def predict_volume(config: PipelineConfig, checkpoint_path: Path | str, input_spec: str, output_store: Path | str
                   ) -> dict[str, Any]:
    """Predict one volume in this process: the predict stage's blocks in order, without a ledger.

    Parameters
    ----------
    config : uses [model], [data] (channels, normalisation: the checkpoint's, see ``normalize.for_prediction``),
        [prediction] (device, batch_size, patch_dtype, zero_background), [vote] block_shape (the block, rounded
        up to whole tiles) and [general] overwrite.
    checkpoint_path : a checkpoint of the same architecture (else CheckpointError, before anything is written).
    input_spec : ``"path.zarr/key"`` of a (C, Z, Y, X) or (Z, Y, X) raw volume.
    output_store : the zarr group to write ``numinst``/``fg`` and ``patches``/``codes`` into.

    Returns
    -------
    dict: ``outputs`` (name -> array spec), ``tiles``, ``blocks``, ``voxels``, ``seconds``, ``voxels_per_s``,
    ``tile_geometry``.
    """
    from ppp_dist.learning.model import load_network
    from ppp_dist.learning.normalize import for_prediction
    from ppp_dist.learning.predict import open_raw, tile_geometry

    started = time.perf_counter()
    _, channels, spatial = open_raw(input_spec, config.data)
    config = for_prediction(config, input_spec, checkpoint_path)
    load_network(config.model, channels, checkpoint_path, config.prediction.device)  # refused before any write
    stage = PredictStage.create(config, input_spec, str(output_store), str(checkpoint_path))
    grid = stage.grid()
    tiles = sum(int(stage.process_block(block)["tiles"]) for block in grid)
    seconds = time.perf_counter() - started
    voxels = int(np.prod(spatial))
    geometry = tile_geometry(config.model)
    logger.info("predicted %s (%s, %d tiles of %s in %d blocks) in %.1f s: %.0f voxels/s", input_spec, spatial, tiles,
                geometry.output_shape, len(grid), seconds, voxels / max(seconds, 1e-9))
    return {"outputs": dict(stage.outputs), "tiles": tiles, "blocks": len(grid), "voxels": voxels,
            "seconds": seconds, "voxels_per_s": voxels / max(seconds, 1e-9), "tile_geometry": geometry}


def check_tiles(config: PipelineConfig, grid: BlockGrid) -> None:
    from ppp_dist.learning.predict import tile_geometry

    out = tile_geometry(config.model).output_shape
    if any(b % o for b, o in zip(grid.block_shape, out)):
        raise ConfigError(f"predict block shape {grid.block_shape} must be a multiple of the network output tile "
                          f"{out}")


__all__ = ["PredictStage", "STAGE", "block_shape_for", "predict_box", "predict_volume", "check_tiles",
           "output_names", "prepare_outputs"]


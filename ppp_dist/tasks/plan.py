"""Command plan, a dry run: what each stage would do on a volume (blocks, halos, memory); writes nothing."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ppp_dist import geometry
from ppp_dist.config import PipelineConfig, load_config
from ppp_dist.errors import ConfigError, InputDataError
from ppp_dist.learning.network_shapes import unet_output_shape
from ppp_dist.pipeline.settings import assembly_settings, vote_halo
from ppp_dist.tasks.base import CommandContext, TaskResult

NAME = "plan"
SUMMARY = "dry run: blocks, halos and memory per stage for a volume; writes nothing"
UPSTREAM: tuple[str, ...] = ()


def preflight(ctx: CommandContext) -> None:
    from ppp_dist.limits import check_volume

    config = load_config(ctx.args.config, ctx.overrides)
    array = _open_input(config)
    check_volume(tuple(int(s) for s in array.shape[-3:]), str(config.data.input), config.vote.block_shape)
    channels = int(array.shape[0]) if array.ndim == 4 else 1
    if channels != config.data.num_channels:
        raise InputDataError(f"{config.data.input} has {channels} channels but [data] num_channels = "
                             f"{config.data.num_channels}; fix one of them")


def run(ctx: CommandContext) -> TaskResult:
    """Print the blocks, halos and memory per block of every stage for the input volume."""
    from ppp_dist.io import volumes

    config = load_config(ctx.args.config, ctx.overrides)
    array = volumes.open_array(config.data.input)  # checked by preflight
    spatial = tuple(int(s) for s in array.shape[-3:])
    channels = int(array.shape[0]) if array.ndim == 4 else 1
    print(f"volume   {config.data.input}: {channels} channel(s) x {spatial} (Z, Y, X), {array.dtype}, "
          f"chunks {tuple(array.chunks)}")
    print(f"patches  {config.model.patch_shape} ({config.model.head}); vote block {config.vote.block_shape}")
    print(f"{'stage':<8} {'blocks':>7} {'block (Z,Y,X)':>16} {'halo':>13} {'memory/block':>13}  note")
    stages = plan_volume(config, spatial)
    for stage in stages:
        print(f"{stage.stage:<8} {stage.blocks:>7} {str(stage.block_shape):>16} {str(stage.halo):>13} "
              f"{format_bytes(stage.memory_bytes):>13}  {stage.note}")
    for line in network_lines(config, spatial):
        print(line)
    if config.vote.partition == "mutex_watershed":
        print(f"driver   {check_mws_budget(config, math.prod(spatial))}")
    print("nothing was written (dry run)")
    return TaskResult(summary={"stages": stages})


def _open_input(config: PipelineConfig) -> Any:
    from ppp_dist.io import volumes

    if not config.data.input:
        raise ConfigError("this command needs a volume: pass --input PATH.zarr/KEY or set [data] input")
    array = volumes.open_array(config.data.input)
    if array.ndim not in (3, 4):
        raise InputDataError(f"{config.data.input} has {array.ndim} dimensions with shape {array.shape}; "
                             "expected (C, Z, Y, X) or (Z, Y, X)")
    volumes.check_real(array, config.data.input)
    volumes.check_not_empty(array, config.data.input)
    return array


def positive_offsets(patch_shape: tuple[int, ...]) -> int:
    """Number of lexicographically positive voxel-pair offsets inside a (2 ps - 1) window."""
    n = 1
    for p in patch_shape:
        n *= 2 * p - 1
    return (n - 1) // 2


def vote_memory_bytes(block_shape: tuple[int, ...], patch_shape: tuple[int, ...], halo: tuple[int, ...],
                      foreground_fraction: float, patch_bytes: int = 1,
                      volume_shape: tuple[int, ...] | None = None) -> int:
    """Upper estimate of one vote block's peak memory.

    patches as stored (P x V x patch_bytes) + float32 copy (4 P V) + consensus sum and count over
    foreground voxels only (8 x n_pos x fg x V), V = voxels of the block with its halo.
    """
    read = [b + 2 * h for b, h in zip(block_shape, halo)]
    if volume_shape is not None:  # reads are clipped at the volume border
        read = [min(r, s) for r, s in zip(read, volume_shape)]
    voxels = int(np.prod(read))
    patch_size = int(np.prod(patch_shape))
    fg = int(np.ceil(voxels * foreground_fraction))
    return patch_size * voxels * (patch_bytes + 4) + 8 * positive_offsets(patch_shape) * fg


@dataclass(frozen=True)
class StagePlan:
    """What one stage would do: its blocks and per-block footprint."""

    stage: str
    blocks: int
    block_shape: tuple[int, ...]
    halo: tuple[int, ...]
    memory_bytes: int
    note: str


def read_factor(spatial_shape: tuple[int, ...], block_shape: tuple[int, ...], halo: tuple[int, ...]) -> float:
    """Voxels the blocks read (read boxes clipped to the volume) per voxel of the volume; the read box is a
    product of per-axis intervals, so the sum over blocks is a product of per-axis sums."""
    factor = 1.0
    for size, b, h in zip(spatial_shape, block_shape, halo):
        starts = range(0, size, b)
        factor *= sum(min(size, s + b + h) - max(0, s - h) for s in starts) / size
    return factor


def plan_volume(config: PipelineConfig, spatial_shape: tuple[int, ...]) -> list[StagePlan]:
    """Plan predict and vote/paint for a volume of ``spatial_shape`` (Z, Y, X) voxels."""
    model, vote = config.model, config.vote
    is_2d = spatial_shape[0] == 1 or model.patch_shape[0] == 1
    downsample: tuple[tuple[int, ...], ...] = model.downsample_factors
    predict_in: tuple[int, ...] = model.predict_input_shape
    if is_2d:
        predict_in = (1,) + tuple(predict_in[1:])
        downsample = tuple((1,) + tuple(f[1:]) for f in downsample)
    predict_out = unet_output_shape(predict_in, downsample, model.kernel_size, model.num_repetitions,
                                    model.padding)
    context = tuple((i - o) // 2 for i, o in zip(predict_in, predict_out))
    out_channels = int(np.prod(model.patch_shape)) if model.head == "patches" else model.code_units
    predict_blocks = geometry.BlockGrid(spatial_shape, predict_out, context).num_blocks  # O(1): no block is made
    in_bytes = int(np.prod(predict_in)) * config.data.num_channels * 4
    out_bytes = int(np.prod(predict_out)) * (out_channels + model.max_num_inst + 1) * 4
    block_shape = tuple(min(b, s) for b, s in zip(vote.block_shape, spatial_shape))
    halo = vote_halo(assembly_settings(config))
    vote_blocks = geometry.BlockGrid(spatial_shape, block_shape, halo).num_blocks
    return [
        StagePlan("predict", predict_blocks, predict_out, context, in_bytes + out_bytes,
                  f"network input {predict_in} -> output {predict_out}, {out_channels} "
                  f"{'patch' if model.head == 'patches' else 'code'} channels + numinst"),
        StagePlan("vote", vote_blocks, block_shape, halo,
                  vote_memory_bytes(block_shape, model.patch_shape, halo, 0.25, volume_shape=spatial_shape),
                  f"reads {read_factor(spatial_shape, block_shape, halo):.2f} voxels per voxel; consensus, scores, "
                  "selection, patch graph; memory assumes 25% foreground"),
        StagePlan("paint", vote_blocks, block_shape, tuple(p // 2 for p in model.patch_shape),
                  int(np.prod([b + p for b, p in zip(block_shape, model.patch_shape)]))
                  * (int(np.prod(model.patch_shape)) + 8),
                  "labels by accumulated votes of the selected patches"),
    ]


def format_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


# ---------------------------------------------------------------------------------------------------------
# The network per voxel, and the mutex watershed's driver memory

# edges of the full patch graph per foreground voxel and patch voxel, measured on oracle patches (the FlyLight
# crop with 7^3 patches: 486,859 edges for 21,819 foreground voxels = 0.065 x 343); the planning number of the
# in-memory mutex watershed (soft network output with many selected patches can have more)
MWS_EDGES_PER_FG_VOXEL_AND_PATCH_VOXEL = 0.065
PLAN_FOREGROUND = 0.25  # the foreground fraction plan assumes (as for the vote memory)


def _tile_sum(size: int, starts: range, lo_pad: int, hi_pad: int, block: int, tile: int) -> int:
    """Network output voxels along one axis: each read interval rounded out to whole tiles of the volume's
    tiling (the last tile of the volume is computed whole)."""
    total = 0
    for s in starts:
        lo = max(0, s - lo_pad) // tile * tile
        hi = min(size, s + block + hi_pad)
        total += -(-(hi - lo) // tile) * tile
    return total


def network_ratio(spatial_shape: tuple[int, ...], tile_shape: tuple[int, ...], *, fused: bool = False,
                  block_shape: tuple[int, ...] | None = None, halo: tuple[int, ...] | None = None) -> float:
    """Network output voxels computed per voxel of the volume.

    Stored prediction (``fused=False``): the predict stage computes every tile of the volume's tiling once
    (~1; more only where the last tile sticks out of the volume). Fused (``[prediction] store_patches =
    false``): every vote block predicts its read box (core + vote halo) rounded out to whole tiles, so the
    halo and the rounding are computed again by each block that reads them (paint uses what vote saved).
    """
    ratio = 1.0
    for k, (size, t) in enumerate(zip(spatial_shape, tile_shape)):
        if not fused:
            ratio *= -(-size // t) * t / size
            continue
        b, h = block_shape[k], halo[k]  # type: ignore[index]
        ratio *= _tile_sum(size, range(0, size, b), h, h, b, t) / size
    return ratio


def mws_edges_estimate(voxels: int, patch_shape: tuple[int, ...], foreground: float = PLAN_FOREGROUND) -> int:
    """Edges of the full patch graph (what the mutex watershed holds on the driver), from the measured density."""
    return int(voxels * foreground * MWS_EDGES_PER_FG_VOXEL_AND_PATCH_VOXEL * int(np.prod(patch_shape)))


def check_mws_budget(config: PipelineConfig, voxels: int) -> str:
    """The plan line of the mutex watershed's driver memory; ConfigError when it exceeds the budget."""
    from ppp_dist.errors import ConfigError
    from ppp_dist.pipeline.agglomerate import mws_memory_bytes

    edges = mws_edges_estimate(voxels, config.model.patch_shape)
    need = mws_memory_bytes(edges)
    budget = config.vote.mws_max_memory_gib * 2 ** 30
    if config.vote.partition == "mutex_watershed" and need > budget:
        raise ConfigError(f"partition = 'mutex_watershed' would hold ~{edges:,} edges ({format_bytes(need)}) in the "
                          f"driver's memory, over [vote] mws_max_memory_gib = {config.vote.mws_max_memory_gib:g}; use "
                          "partition = 'connected_components' (contracted per block) or raise the budget")
    return (f"mutex_watershed would hold ~{edges:,} edges, ~{format_bytes(need)} on the driver (budget "
            f"{config.vote.mws_max_memory_gib:g} GiB; assumes {PLAN_FOREGROUND:.0%} foreground)")


def network_lines(config: PipelineConfig, spatial_shape: tuple[int, ...]) -> list[str]:
    """Plan lines: network output voxels per volume voxel, stored and fused, and which one this run uses."""
    from ppp_dist.learning.predict import tile_geometry

    geometry = tile_geometry(config.model)
    out = tuple(int(x) for x in geometry.output_shape)
    # a same-padding network computes its whole input tile and keeps the centre
    computed = float(np.prod(geometry.input_shape) / np.prod(out)) if config.model.padding == "same" else 1.0
    block = tuple(min(b, s) for b, s in zip(config.vote.block_shape, spatial_shape))
    halo = vote_halo(assembly_settings(config))
    stored = network_ratio(spatial_shape, out) * computed
    fused = network_ratio(spatial_shape, out, fused=True, block_shape=block, halo=halo) * computed
    use = "fused" if not config.prediction.store_patches else "stored"
    return [f"network  {stored:.2f} output voxels per voxel with the stored prediction (tile {out}), "
            f"{fused:.2f} fused (vote read boxes rounded to tiles); this run: {use}"]

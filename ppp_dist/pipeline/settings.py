"""Settings of the blockwise assembly, the halo per step, and reading a prediction block.

The blockwise stages call the same ``ppp_dist.ops`` step functions as the whole-volume
``ops.assemble`` with the same parameters: one :class:`ppp_dist.ops.settings.AssemblySettings`, built from a
``PipelineConfig`` by :func:`assembly_settings` (:func:`blockwise_settings` adds what only the blockwise
stages refuse).

Halo (docs/assembly.md, "Halo per step"; h = patch_shape // 2 per axis). The vote stage keeps the
selected patches and the edges whose first patch lies in its core; the edges need the selected status of
patches within 4h, which needs scores within 6h, which need consensus rows within 7h of the core; a
consensus row needs inputs within 4h (refined consensus, the default) or 2h (single pass). Hence

* vote: consensus rows computed for core + 7h (``owned=``), inputs read on core + 11h (9h unrefined);
* paint: core + h (the selected patches and their rows come from what the vote stage saved).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from ppp_dist.errors import ConfigError
from ppp_dist.ops.settings import AssemblySettings, Shape

if TYPE_CHECKING:
    from ppp_dist.config.sections import PipelineConfig

def assembly_settings(config: PipelineConfig) -> AssemblySettings:
    """The assembly's parameters from a config: the one place they are read from it."""
    vote, model = config.vote, config.model
    pz, py, px = model.patch_shape
    t1, t2 = vote.numinst_thresholds
    return AssemblySettings((pz, py, px), patch_threshold=vote.patch_threshold,
                            cover_threshold=vote.cover_threshold, numinst_thresholds=(t1, t2),
                            foreground_threshold=vote.foreground_threshold, consensus=vote.consensus,
                            different_rule=vote.different_rule, selection=vote.selection, partition=vote.partition,
                            edge_threshold=vote.edge_threshold, max_num_inst=model.max_num_inst,
                            min_instance_size=config.postprocess.min_instance_size,
                            overlap_channels=vote.overlap_channels, overlap_votes=vote.overlap_votes,
                            refine_consensus=vote.refine_consensus, thin_out=vote.thin_out)


def blockwise_settings(config: PipelineConfig) -> AssemblySettings:
    """:func:`assembly_settings`, refused in one sentence when the blockwise stages cannot run them."""
    if config.postprocess.dilate:
        raise ConfigError("[postprocess] dilate is not implemented blockwise yet; set dilate = 0 "
                          "(or dilate the output afterwards with `ppp-dist postprocess`)")
    return assembly_settings(config).check_blockwise()


def consensus_halo(settings: AssemblySettings) -> Shape:
    """Input halo of one consensus row: 4h refined (two passes), 2h single pass."""
    k = 4 if settings.refine_consensus else 2
    return tuple(k * x for x in settings.h)  # type: ignore[return-value]


def owned_rows_margin(settings: AssemblySettings) -> Shape:
    """Consensus rows the vote stage needs around its core: 7h (selection within 4h -> scores within 6h)."""
    return tuple(7 * x for x in settings.h)  # type: ignore[return-value]


def vote_halo(settings: AssemblySettings) -> Shape:
    """Input halo of the vote stage: 7h + the consensus halo (11h by default, 9h unrefined)."""
    return tuple(a + b for a, b in zip(owned_rows_margin(settings), consensus_halo(settings)))  # type: ignore[return-value]


def paint_halo(settings: AssemblySettings) -> Shape:
    """Input halo of the paint stage: h (the selected patches covering a voxel are centred within h)."""
    return settings.h


def prediction_arrays(prediction: str) -> tuple[str, str]:
    """``(patches, numinst-or-fg)`` array paths inside a prediction group."""
    from ppp_dist.errors import InputDataError
    from ppp_dist.io import volumes

    group = str(prediction).rstrip("/")
    for name in ("numinst", "fg"):
        try:
            volumes.open_array(f"{group}/{name}")
        except InputDataError:
            continue
        return f"{group}/patches", f"{group}/{name}"
    raise InputDataError(f"{group} has neither numinst (3, Z, Y, X) nor fg (1, Z, Y, X); it is not a "
                         "ppp_dist prediction")


def check_prediction(patches: Any, numinst: Any, patch_shape: Shape, where: str) -> Shape:
    """Validate the prediction arrays' shapes; return the spatial shape."""
    from ppp_dist.errors import InputDataError

    expected = int(np.prod(patch_shape))
    if patches.ndim != 4 or patches.shape[0] != expected:
        raise InputDataError(f"{where}/patches has shape {patches.shape}; expected ({expected}, Z, Y, X) for "
                             f"model.patch_shape {tuple(patch_shape)}")
    if numinst.ndim != 4 or numinst.shape[0] not in (1, 3) or tuple(numinst.shape[1:]) != tuple(patches.shape[1:]):
        raise InputDataError(f"{where}: numinst/fg has shape {numinst.shape} but patches cover "
                             f"{tuple(patches.shape[1:])}; expected (3 or 1, Z, Y, X) over the same voxels")
    if patches.dtype not in (np.uint8, np.float16, np.float32):
        raise InputDataError(f"{where}/patches has dtype {patches.dtype}; expected uint8 (value/255), float16 "
                             "or float32")
    return tuple(int(s) for s in patches.shape[1:])  # type: ignore[return-value]


__all__ = ["AssemblySettings", "assembly_settings", "blockwise_settings", "check_prediction", "consensus_halo",
           "owned_rows_margin", "paint_halo", "prediction_arrays", "vote_halo"]

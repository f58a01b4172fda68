"""Settings of the blockwise assembly, the halo per step, and reading a prediction block.

The blockwise stages call the same ``ppp_dist.ops`` step functions as the whole-volume
``ops.assemble`` with the same parameters; :class:`AssemblySettings` is that parameter set (built from a
``PipelineConfig`` by :meth:`AssemblySettings.from_config`, defaults equal to ``assemble``'s).

Halo (docs/assembly.md, "Halo per step"; h = patch_shape // 2 per axis). The vote stage keeps the
selected patches and the edges whose first patch lies in its core; the edges need the selected status of
patches within 4h, which needs scores within 6h, which need consensus rows within 7h of the core; a
consensus row needs inputs within 4h (refined consensus, the default) or 2h (single pass). Hence

* vote: consensus rows computed for core + 7h (``owned=``), inputs read on core + 11h (9h unrefined);
* paint: core + h (the selected patches and their rows come from what the vote stage saved).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from ppp_dist.errors import ConfigError

if TYPE_CHECKING:
    from ppp_dist.config.sections import PipelineConfig

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class AssemblySettings:
    """The parameters of ``ops.assemble`` that the blockwise stages use (picklable, small)."""

    patch_shape: Shape
    patch_threshold: float = 0.5
    cover_threshold: float = 0.5
    numinst_thresholds: tuple[float, float] = (0.9, 0.1)
    foreground_threshold: float = 0.5
    consensus: str = "prob_product"
    different_rule: str = "less_than_threshold"
    selection: str = "local"
    partition: str = "connected_components"
    edge_threshold: float = 0.0
    max_num_inst: int = 2
    min_instance_size: int = 0
    accumulate: str = "sum"
    overlap_votes: str = "fallback"
    refine_consensus: bool = True
    overlap_channels: bool = True

    def __post_init__(self) -> None:
        ps = tuple(int(s) for s in self.patch_shape)
        if len(ps) != 3 or any(s < 1 or s % 2 == 0 for s in ps):
            raise ConfigError(f"[model] patch_shape {self.patch_shape} must be 3 odd sizes (pz, py, px)")
        object.__setattr__(self, "patch_shape", ps)
        if self.selection != "local":
            raise ConfigError(
                f"[vote] selection = {self.selection!r} cannot run blockwise: the greedy cover is sequential "
                "over the whole volume and not block invariant; use selection = 'local' (or `ppp-dist label` "
                "for the original greedy cover of a volume that fits in memory)")
        if self.partition not in ("connected_components", "mutex_watershed"):
            raise ConfigError(f"[vote] partition = {self.partition!r} must be connected_components or "
                              "mutex_watershed")

    @classmethod
    def from_config(cls, config: PipelineConfig) -> AssemblySettings:
        """From a ``PipelineConfig`` ([model] patch_shape/max_num_inst, [vote], [postprocess])."""
        vote, model = config.vote, config.model
        if config.postprocess.dilate:
            raise ConfigError("[postprocess] dilate is not implemented blockwise yet; set dilate = 0 "
                              "(or dilate the output afterwards with `ppp-dist postprocess`)")
        pz, py, px = model.patch_shape
        t1, t2 = vote.numinst_thresholds
        return cls((pz, py, px), patch_threshold=vote.patch_threshold,
                   cover_threshold=vote.cover_threshold, numinst_thresholds=(t1, t2),
                   foreground_threshold=vote.foreground_threshold,
                   consensus=vote.consensus, different_rule=vote.different_rule, selection=vote.selection,
                   partition=vote.partition, edge_threshold=vote.edge_threshold, max_num_inst=model.max_num_inst,
                   min_instance_size=config.postprocess.min_instance_size, overlap_channels=vote.overlap_channels,
                   overlap_votes=vote.overlap_votes, refine_consensus=vote.refine_consensus)

    @property
    def h(self) -> Shape:
        return tuple(s // 2 for s in self.patch_shape)  # type: ignore[return-value]

    def assemble_kwargs(self) -> dict[str, Any]:
        """Keyword arguments of ``ops.assemble`` giving the same result on the whole volume."""
        return dict(patch_threshold=self.patch_threshold, cover_threshold=self.cover_threshold,
                    numinst_thresholds=self.numinst_thresholds, consensus=self.consensus,
                    foreground_threshold=self.foreground_threshold,
                    different_rule=self.different_rule, selection=self.selection, partition=self.partition,
                    edge_threshold=self.edge_threshold, max_num_inst=self.max_num_inst,
                    min_instance_size=self.min_instance_size, refine_consensus=self.refine_consensus,
                    overlap_votes=self.overlap_votes)


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
    """``(patches, numinst-or-fg)`` array paths inside a prediction group (``label.read_prediction`` layout)."""
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


__all__ = ["AssemblySettings", "check_prediction", "consensus_halo", "owned_rows_margin", "paint_halo",
           "prediction_arrays", "vote_halo"]

"""The parameters of the assembly, spelled once: what ``ops.assemble`` takes and the blockwise stages carry.

``pipeline.settings.assembly_settings`` builds them from a config ([model] patch_shape and max_num_inst,
[vote], [postprocess] min_instance_size), in one place; the defaults here are the config's.
"""

from __future__ import annotations

from dataclasses import dataclass

from ppp_dist.errors import ConfigError

Shape = tuple[int, int, int]


@dataclass(frozen=True)
class AssemblySettings:
    """Every parameter of the assembly (picklable, small; see ``ops.assemble`` for their meaning)."""

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
    overlap_channels: bool = True  # keep the overlap channels of the labels (else channel 0 only)
    thin_out: bool = True  # greedy selection only: thin the ranked cover out by greedy set cover

    def __post_init__(self) -> None:
        ps = tuple(int(s) for s in self.patch_shape)
        if len(ps) != 3 or any(s < 1 or s % 2 == 0 for s in ps):
            raise ConfigError(f"[model] patch_shape {self.patch_shape} must be 3 odd sizes (pz, py, px)")
        object.__setattr__(self, "patch_shape", ps)
        object.__setattr__(self, "numinst_thresholds", tuple(float(t) for t in self.numinst_thresholds))

    @property
    def h(self) -> Shape:
        pz, py, px = self.patch_shape
        return pz // 2, py // 2, px // 2

    def check_blockwise(self) -> AssemblySettings:
        """``self`` if the blockwise stages can run these settings; else ConfigError in one sentence."""
        if self.selection != "local":
            raise ConfigError(
                f"[vote] selection = {self.selection!r} cannot run blockwise: the greedy cover is sequential "
                "over the whole volume and not block invariant; use selection = 'local' (or `ppp-dist label` "
                "for the original greedy cover of a volume that fits in memory)")
        if self.partition not in ("connected_components", "mutex_watershed"):
            raise ConfigError(f"[vote] partition = {self.partition!r} must be connected_components or "
                              "mutex_watershed")
        return self


__all__ = ["AssemblySettings", "Shape"]

"""Zeroed background in stored predictions: the patches of voxels that the assembly counts as background are
never read (``ops.consensus.prepare_field`` gathers the patches of foreground voxels only), so storing zeros
there changes no result and lets the chunks of background compress to almost nothing.

"Background" is numinst 0 as the assembly computes it from the stored numinst (``ops._geometry.
numinst_from_prob`` with ``[vote] numinst_thresholds``, or ``[vote] foreground_threshold`` for a single
foreground channel), so a prediction zeroed at some thresholds must be assembled at the same thresholds: the
thresholds are recorded in the patch array's attributes and a mismatch is refused (:func:`check_zeroed`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

if TYPE_CHECKING:
    from ppp_dist.config.sections import PipelineConfig

ATTR = "zeroed_background"


def zero_background(outputs: dict[str, np.ndarray], numinst_thresholds: Any, foreground_threshold: float = 0.5
                    ) -> dict[str, np.ndarray]:
    """Stored outputs of one tile (name -> (C, *tile)) with the patches of background voxels set to 0."""
    from ppp_dist.ops._geometry import numinst_from_prob

    name = "numinst" if "numinst" in outputs else "fg"
    if "patches" not in outputs or name not in outputs:
        return outputs
    patches = outputs["patches"]
    background = numinst_from_prob(outputs[name], tuple(numinst_thresholds), patches.shape[1:],
                                   float(foreground_threshold)) == 0
    if background.any():
        patches = patches.copy()
        patches[:, background] = 0
    return {**outputs, "patches": patches}


def zeroed_attrs(config: PipelineConfig) -> dict[str, Any]:
    """The patch array's attribute that records the zeroing (empty when it is off)."""
    if not config.prediction.zero_background:
        return {}
    return {ATTR: {"numinst_thresholds": [float(t) for t in config.vote.numinst_thresholds],
                   "foreground_threshold": float(config.vote.foreground_threshold)}}


def check_zeroed(attrs: Any, numinst_thresholds: Any, where: str, foreground_threshold: float | None = None) -> None:
    """InputDataError when ``attrs`` say the background was zeroed at other numinst thresholds (or, for a
    single foreground channel, ``foreground_threshold`` given, at another foreground threshold)."""
    from ppp_dist.errors import InputDataError

    info = (attrs.get("ppp_dist") or {}).get(ATTR) if hasattr(attrs, "get") else None
    if not info:
        return
    if foreground_threshold is not None:
        stored_fg = float(info.get("foreground_threshold", 0.5))
        if stored_fg != float(foreground_threshold):
            raise InputDataError(f"{where} stores zeros as the patches of voxels that were background at [vote] "
                                 f"foreground_threshold = {stored_fg:g}; label it with that threshold, or predict "
                                 f"again with {float(foreground_threshold):g} (or with [prediction] zero_background = "
                                 "false)")
        return
    stored = [float(t) for t in info.get("numinst_thresholds", [])]
    wanted = [float(t) for t in numinst_thresholds]
    if stored != wanted:
        raise InputDataError(f"{where} stores zeros as the patches of voxels that were background at [vote] "
                             f"numinst_thresholds = {stored}; label it with those thresholds, or predict again with "
                             f"the new ones {wanted} (or with [prediction] zero_background = false)")


__all__ = ["ATTR", "check_zeroed", "zero_background", "zeroed_attrs"]

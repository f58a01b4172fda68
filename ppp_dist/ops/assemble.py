"""Whole-volume PatchPerPix assembly: predictions -> (K, Z, Y, X) instance labels.

Steps (each a public function that a blockwise runner can call with a halo, see docs/assembly.md):
numinst -> prepare_field -> compute_consensus -> compute_scores -> select_patches -> patch_graph ->
partition -> paint_instances -> remove_small_and_relabel.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace
from dataclasses import field as dc_field
from typing import Any

import numpy as np

from ppp_dist.ops._geometry import check_patch_array, check_patch_shape, numinst_from_prob
from ppp_dist.ops.consensus import Consensus, PatchField, compute_consensus, compute_scores, prepare_field
from ppp_dist.ops.paint import paint_instances
from ppp_dist.ops.partition import partition
from ppp_dist.ops.patch_graph import PatchGraph, patch_graph
from ppp_dist.ops.postprocess import remove_small_and_relabel
from ppp_dist.ops.selection import select_patches
from ppp_dist.ops.settings import AssemblySettings


@dataclass
class AssemblyResult:
    labels: np.ndarray  # (K, Z, Y, X) uint32
    numinst: np.ndarray
    field: PatchField
    consensus: Consensus
    scores: np.ndarray
    selected: np.ndarray
    graph: PatchGraph
    node_labels: np.ndarray
    timings: dict[str, float] = dc_field(default_factory=dict)
    nbytes: dict[str, int] = dc_field(default_factory=dict)


def settings_of(settings: AssemblySettings | Sequence[int], **changes: Any) -> AssemblySettings:
    """``settings`` with ``changes``; a patch shape with keyword arguments builds them (defaults elsewhere)."""
    if isinstance(settings, AssemblySettings):
        return replace(settings, **changes) if changes else settings
    return AssemblySettings(tuple(settings), **changes)  # type: ignore[arg-type]


def assemble_with_intermediates(patches: np.ndarray, numinst_prob: np.ndarray,
                                settings: AssemblySettings | Sequence[int], **changes: Any) -> AssemblyResult:
    """Run every step on the whole volume; return labels, intermediates, per-step seconds and bytes."""
    c = settings_of(settings, **changes)
    t = {}
    t0 = time.perf_counter()
    ps = check_patch_shape(c.patch_shape)
    patches = check_patch_array(patches, ps)
    numinst = numinst_from_prob(numinst_prob, c.numinst_thresholds, patches.shape[1:], c.foreground_threshold)
    fld = prepare_field(patches, numinst, ps)
    del patches
    t["prepare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cons = compute_consensus(fld, threshold=c.patch_threshold, rule=c.consensus, different_rule=c.different_rule,
                             overlap_votes=c.overlap_votes, refine=c.refine_consensus)
    t["consensus"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = compute_scores(fld, cons)
    t["scores"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    selected = select_patches(fld, cons, scores, mode=c.selection, cover_threshold=c.cover_threshold,
                              max_num_inst=c.max_num_inst, thin_out=c.thin_out)
    t["selection"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = patch_graph(fld, cons, selected, patch_threshold=c.patch_threshold)
    t["patch_graph"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    node_labels = partition(len(selected), graph.pairs, graph.weights, graph.counts, graph.tiers,
                            method=c.partition, threshold=c.edge_threshold)
    t["partition"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = paint_instances(fld, selected, node_labels, patch_threshold=c.patch_threshold,
                             max_num_inst=c.max_num_inst, accumulate=c.accumulate)
    t["paint"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = remove_small_and_relabel(labels, c.min_instance_size)
    t["postprocess"] = time.perf_counter() - t0
    nb = {"field": fld.nbytes(), "consensus": cons.nbytes(), "labels": int(labels.nbytes),
          "graph": int(graph.pairs.nbytes + graph.weights.nbytes + graph.counts.nbytes)}
    return AssemblyResult(labels, numinst, fld, cons, scores, selected, graph, node_labels, t, nb)


def assemble(patches: np.ndarray, numinst_prob: np.ndarray, settings: AssemblySettings | Sequence[int],
             **changes: Any) -> np.ndarray:
    """PatchPerPix instances from predicted patches and numinst probabilities.

    Parameters
    ----------
    patches : (P, Z, Y, X) float32/float16 in [0, 1] or uint8 (value / 255), P = prod(patch_shape)
    numinst_prob : (3, Z, Y, X) probabilities of 0 / 1 / >= 2 instances, or (1, Z, Y, X) foreground
    settings : :class:`~ppp_dist.ops.settings.AssemblySettings`, or the patch shape (pz, py, px) (odd; 2D data
        is Z = 1 with (1, py, px)) with the other settings as keyword arguments; keyword arguments given with
        settings replace those fields. Among them: ``refine_consensus`` (a second consensus pass without the
        patch entries the first one contradicts; False = the single pass of the original), ``overlap_votes``
        ("fallback": patches centred on overlap voxels vote where no other patch does; or "ignore"),
        ``thin_out`` (greedy selection only), ``foreground_threshold`` (with a foreground channel).

    Returns
    -------
    (max_num_inst, Z, Y, X) uint32: channel 0 the primary label of every foreground voxel, channel k the
    (k+1)-th label of overlap voxels (numinst >= 2); ids 1..n, ordered by the smallest patch centre.
    """
    return assemble_with_intermediates(patches, numinst_prob, settings, **changes).labels

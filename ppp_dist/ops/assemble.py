"""Whole-volume PatchPerPix assembly: predictions -> (K, Z, Y, X) instance labels.

Steps (each a public function that a blockwise runner can call with a halo, see docs/assembly.md):
numinst -> prepare_field -> compute_consensus -> compute_scores -> select_patches -> patch_graph ->
partition -> paint_instances -> remove_small_and_relabel.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from dataclasses import field as dc_field

import numpy as np

from ppp_dist.ops._geometry import check_patch_array, check_patch_shape, numinst_from_prob
from ppp_dist.ops.consensus import Consensus, PatchField, compute_consensus, compute_scores, prepare_field
from ppp_dist.ops.paint import paint_instances
from ppp_dist.ops.partition import partition
from ppp_dist.ops.patch_graph import PatchGraph, patch_graph
from ppp_dist.ops.postprocess import remove_small_and_relabel
from ppp_dist.ops.selection import select_patches


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


def assemble_with_intermediates(patches: np.ndarray, numinst_prob: np.ndarray, patch_shape, *,
                                patch_threshold: float = 0.5, cover_threshold: float = 0.5,
                                numinst_thresholds=(0.9, 0.1), consensus: str = "prob_product",
                                different_rule: str = "less_than_threshold", selection: str = "local",
                                partition_method: str = "connected_components", edge_threshold: float = 0.0,
                                max_num_inst: int = 2, min_instance_size: int = 0,
                                accumulate: str = "sum", overlap_votes: str = "fallback",
                                refine_consensus: bool = True, thin_out: bool = True,
                                foreground_threshold: float = 0.5) -> AssemblyResult:
    """Run every step on the whole volume; return labels, intermediates, per-step seconds and bytes."""
    t = {}
    t0 = time.perf_counter()
    ps = check_patch_shape(patch_shape)
    patches = check_patch_array(patches, ps)
    numinst = numinst_from_prob(numinst_prob, numinst_thresholds, patches.shape[1:], foreground_threshold)
    fld = prepare_field(patches, numinst, ps)
    del patches
    t["prepare"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    cons = compute_consensus(fld, threshold=patch_threshold, rule=consensus, different_rule=different_rule,
                             overlap_votes=overlap_votes, refine=refine_consensus)
    t["consensus"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    scores = compute_scores(fld, cons)
    t["scores"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    selected = select_patches(fld, cons, scores, mode=selection, cover_threshold=cover_threshold,
                              max_num_inst=max_num_inst, thin_out=thin_out)
    t["selection"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    graph = patch_graph(fld, cons, selected, patch_threshold=patch_threshold)
    t["patch_graph"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    node_labels = partition(len(selected), graph.pairs, graph.weights, graph.counts, graph.tiers,
                            method=partition_method,
                            threshold=edge_threshold)
    t["partition"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = paint_instances(fld, selected, node_labels, patch_threshold=patch_threshold,
                             max_num_inst=max_num_inst, accumulate=accumulate)
    t["paint"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    labels = remove_small_and_relabel(labels, min_instance_size)
    t["postprocess"] = time.perf_counter() - t0
    nb = {"field": fld.nbytes(), "consensus": cons.nbytes(), "labels": int(labels.nbytes),
          "graph": int(graph.pairs.nbytes + graph.weights.nbytes + graph.counts.nbytes)}
    return AssemblyResult(labels, numinst, fld, cons, scores, selected, graph, node_labels, t, nb)


def assemble(patches: np.ndarray, numinst_prob: np.ndarray, patch_shape, *, patch_threshold: float = 0.5,
             cover_threshold: float = 0.5, numinst_thresholds=(0.9, 0.1), consensus: str = "prob_product",
             different_rule: str = "less_than_threshold", selection: str = "local",
             partition: str = "connected_components", edge_threshold: float = 0.0, max_num_inst: int = 2,
             min_instance_size: int = 0, refine_consensus: bool = True, overlap_votes: str = "fallback",
             thin_out: bool = True, foreground_threshold: float = 0.5) -> np.ndarray:
    """PatchPerPix instances from predicted patches and numinst probabilities.

    Parameters
    ----------
    patches : (P, Z, Y, X) float32/float16 in [0, 1] or uint8 (value / 255), P = prod(patch_shape)
    numinst_prob : (3, Z, Y, X) probabilities of 0 / 1 / >= 2 instances, or (1, Z, Y, X) foreground
    patch_shape : (pz, py, px) odd; 2D data is Z = 1 with (1, py, px)
    refine_consensus : second consensus pass without the patch entries the first one contradicts
        (consensus.py; False = the single pass of the original)
    overlap_votes : "fallback" (patches centred on overlap voxels vote where no other patch does) or "ignore"
    thin_out : greedy selection only: thin the ranked cover out by greedy set cover
    foreground_threshold : with a foreground channel: foreground where its probability is above this

    Returns
    -------
    (max_num_inst, Z, Y, X) uint32: channel 0 the primary label of every foreground voxel, channel k the
    (k+1)-th label of overlap voxels (numinst >= 2); ids 1..n, ordered by the smallest patch centre.
    """
    return assemble_with_intermediates(
        patches, numinst_prob, patch_shape, patch_threshold=patch_threshold, cover_threshold=cover_threshold,
        numinst_thresholds=numinst_thresholds, consensus=consensus, different_rule=different_rule,
        selection=selection, partition_method=partition, edge_threshold=edge_threshold, max_num_inst=max_num_inst,
        min_instance_size=min_instance_size, refine_consensus=refine_consensus, overlap_votes=overlap_votes,
        thin_out=thin_out, foreground_threshold=foreground_threshold).labels

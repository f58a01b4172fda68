"""End-to-end assembly: oracle exactness, robustness to noisy patches, determinism, wrapper errors.

Oracle exactness compares against ``split_channels`` (docs/assembly.md, "Oracle exactness"): each GT
channel split into pieces under patch-window adjacency, with overlap voxels keeping only the pieces
that have a non-overlap voxel within h.
"""

import numba
import numpy as np
import pytest
from _assembly_helpers import compare_to_pieces, iou_per_instance, iou_per_piece, oracle, split_channels

from ppp_dist.data import synthetic
from ppp_dist.data.flylight import load_flylight
from ppp_dist.errors import InputDataError
from ppp_dist.ops._geometry import numinst_from_prob
from ppp_dist.ops.assemble import assemble, assemble_with_intermediates
from ppp_dist.ops.consensus import compute_consensus, compute_scores, prepare_field
from ppp_dist.ops.paint import paint_instances
from ppp_dist.ops.partition import partition
from ppp_dist.ops.patch_graph import patch_graph
from ppp_dist.ops.selection import select_patches

DATASETS = {
    "flylight": lambda: (load_flylight().instances, (7, 7, 7)),
    "tubes": lambda: (synthetic.crossing_tubes_3d((40, 40, 40), n_tubes=3, seed=0).instances, (7, 7, 7)),
    "worms": lambda: (synthetic.crossing_worms_2d((96, 96), n_worms=3, seed=0).instances, (1, 41, 41)),
    "nuclei2d": lambda: (synthetic.touching_nuclei_2d((96, 96), seed=0).instances, (1, 25, 25)),
    "nuclei3d": lambda: (synthetic.touching_nuclei_3d((32, 32, 32), n=4, seed=0).instances, (9, 9, 9)),
}


@pytest.fixture(scope="module", params=list(DATASETS))
def oracle_run(request):
    inst, ps = DATASETS[request.param]()
    patches, ni = oracle(inst, ps)
    field = prepare_field(patches, numinst_from_prob(ni), ps)
    cons = compute_consensus(field)
    return request.param, inst, ps, field, cons, compute_scores(field, cons)


@pytest.mark.parametrize("selection", ["local", "greedy"])
def test_oracle_patches_give_back_ground_truth(oracle_run, selection):
    name, inst, ps, field, cons, scores = oracle_run
    assert np.allclose(scores, 1.0)  # oracle patches agree with the consensus everywhere
    sel = select_patches(field, cons, scores, mode=selection)
    graph = patch_graph(field, cons, sel)
    pieces = split_channels(inst, ps)
    for method in ("connected_components", "mutex_watershed"):
        node_labels = partition(len(sel), graph.pairs, graph.weights, graph.counts, graph.tiers, method=method)
        labels = paint_instances(field, sel, node_labels)
        wrong, info = compare_to_pieces(labels, pieces)
        assert wrong == 0 and info["injective"] and info["n_labels"] == info["n_pieces"], (name, method, info)
        # ids: 1..n ordered by the smallest patch centre, masked by foreground
        assert ((labels[0] > 0) == (field.numinst > 0)).all()
        assert not ((labels[1] > 0) & (field.numinst < 2)).any()


def _noisy(patches, seed=0):
    """Soft oracle 0.8 / 0.2 with 5 % of the entries flipped (seeded; float32 uniforms drawn one channel
    at a time: fast, no volume-sized temporaries)."""
    rng = np.random.default_rng(seed)
    same = patches > 0.5
    for channel in same:
        channel ^= rng.random(channel.shape, dtype=np.float32) < 0.05
    return np.where(same, np.float32(0.8), np.float32(0.2))


# crossing tubes, pooled so that a 95 % rate is measurable: 3 + 12 + 18 = 33 instances (pieces)
NOISY_TUBES = ([((40, 40, 40), 3, 0)] + [((48, 48, 48), None, s) for s in range(5)] +
               [((64, 64, 64), None, s) for s in range(4)])


@pytest.mark.parametrize("name", ["worms", "nuclei2d", "nuclei3d", "tubes"])
def test_soft_noisy_oracle_is_robust(name):
    """Soft (0.8 / 0.2) oracle patches with 5 % of the entries flipped (seeded): IoU >= 0.9 for >= 95 %
    of the instances (the issue's bound)."""
    if name != "tubes":
        inst, ps = DATASETS[name]()
        patches, ni = oracle(inst, ps)
        iou = iou_per_instance(assemble(_noisy(patches), ni, ps), inst)
        assert (iou >= 0.9).mean() >= 0.95, iou
        return
    # tubes: instances are the patch-semantic pieces of the GT (split_channels, what oracle patches give
    # back exactly): a tube that leaves the volume and re-enters farther than h away is two instances
    # for any patch-based method (48³ seed 1: the oracle itself has IoU 0.55 against the raw GT tube)
    iou = []
    for shape, n_tubes, seed in NOISY_TUBES:
        inst = synthetic.crossing_tubes_3d(shape, n_tubes=n_tubes, seed=seed).instances
        patches, ni = oracle(inst, (7, 7, 7))
        patches = _noisy(patches, seed)
        labels = assemble(patches, ni, (7, 7, 7))
        iou.extend(iou_per_piece(labels, split_channels(inst, (7, 7, 7))))
    iou = np.array(iou)
    assert len(iou) == 33 and (iou >= 0.9).mean() >= 0.95, np.round(iou, 3)


def test_same_bytes_with_one_and_two_threads():
    inst, ps = DATASETS["tubes"]()
    patches, ni = oracle(inst, ps)
    patches = _noisy(patches, seed=1)
    before = numba.get_num_threads()
    try:
        runs = []
        for threads in (1, 2):
            numba.set_num_threads(threads)
            r = assemble_with_intermediates(patches, ni, ps, partition="mutex_watershed")
            runs.append(r)
    finally:
        numba.set_num_threads(before)
    a, b = runs
    assert a.consensus.values.tobytes() == b.consensus.values.tobytes()
    assert a.scores.tobytes() == b.scores.tobytes()
    assert a.graph.weights.tobytes() == b.graph.weights.tobytes()
    assert a.labels.tobytes() == b.labels.tobytes()


def test_assemble_contract_and_errors():
    inst, ps = DATASETS["tubes"]()
    patches, ni = oracle(inst, ps)
    labels = assemble((patches * 255).astype(np.uint8), ni, ps, max_num_inst=3, min_instance_size=10)
    assert labels.dtype == np.uint32 and labels.shape == (3,) + inst.shape[1:]
    np.testing.assert_array_equal(np.unique(labels), np.arange(len(np.unique(inst))))  # 0..n consecutive
    fg_only = assemble(patches, ni[1:2] + ni[2:3], ps)  # single foreground channel
    assert (fg_only[1] == 0).all() and (fg_only[0] > 0).sum() == (inst > 0).any(axis=0).sum()
    with pytest.raises(InputDataError, match="numinst_prob"):
        assemble(patches, ni[:2], ps)
    with pytest.raises(InputDataError, match="patches must have shape"):
        assemble(patches, ni, (1, 23, 23))
    with pytest.raises(ValueError, match="selection must be one of"):
        assemble(patches, ni, ps, selection="best")
    with pytest.raises(ValueError, match="partition must be one of"):
        assemble(patches, ni, ps, partition="mws")
    with pytest.raises(ValueError, match="cover_threshold"):
        assemble(patches, ni, ps, cover_threshold=0.0)


@pytest.mark.parametrize("selection", ["local", "greedy"])
def test_empty_and_tiny_volumes(selection):
    ps = (1, 5, 5)
    empty = assemble(np.zeros((25, 1, 6, 7), np.float32), np.zeros((1, 1, 6, 7), np.float32), ps, selection=selection)
    assert empty.shape == (2, 1, 6, 7) and not empty.any()
    tiny = np.zeros((1, 1, 2, 3), dtype=np.uint16)
    tiny[0, 0, :, :2] = 1
    tiny[0, 0, 1, 2] = 2
    patches, ni = oracle(tiny, ps)  # volume smaller than a patch
    labels = assemble(patches, ni, ps, selection=selection, partition="mutex_watershed")
    np.testing.assert_array_equal(labels[0], tiny[0])

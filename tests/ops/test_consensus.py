"""Consensus and patch scores: numba kernels against the NumPy reference, rules, memory, errors."""

import tracemalloc

import numpy as np
import pytest
from _assembly_helpers import crossing_tubes_3d, crossing_worms_2d, oracle

from ppp_dist.errors import InputDataError
from ppp_dist.ops._geometry import numinst_from_prob
from ppp_dist.ops._reference import agreeing_rows_numpy, consensus_numpy, scores_numpy
from ppp_dist.ops.consensus import compute_consensus, compute_scores, prepare_field


def _noisy_field(ps=(5, 5, 5), seed=0):
    inst = crossing_tubes_3d((16, 16, 16), 2)
    p, ni = oracle(inst, ps)
    rng = np.random.default_rng(seed)
    p = np.clip(p * 0.6 + 0.2 + rng.normal(0, 0.15, p.shape), 0, 1).astype(np.float32)
    return prepare_field(p, numinst_from_prob(ni), ps)


@pytest.mark.parametrize("rule,different_rule,th", [
    ("prob_product", "less_than_threshold", 0.5),
    ("prob_product", "inverse_threshold", 0.6),
    ("prob_product", "half_threshold", 0.7),
    ("count", "less_than_threshold", 0.5),
])
def test_consensus_and_scores_match_numpy_reference(rule, different_rule, th):
    field = _noisy_field()
    got = compute_consensus(field, threshold=th, rule=rule, different_rule=different_rule, refine=False)
    ref = consensus_numpy(field, th, rule, different_rule)
    np.testing.assert_array_equal(got.counts, ref.counts)
    np.testing.assert_allclose(got.values, ref.values, atol=1e-6)
    assert (got.counts < 0).any() and (got.counts > 0).any()  # both primary and fallback consensus occur
    assert np.abs(got.values).max() <= 1.0 + 1e-6
    np.testing.assert_allclose(compute_scores(field, got), scores_numpy(field, got), atol=1e-6)
    # refined: the second pass over the rows the first pass does not contradict
    rows = agreeing_rows_numpy(field, ref)
    assert 0 < np.isnan(rows).sum() < 0.2 * rows.size
    refined = compute_consensus(field, threshold=th, rule=rule, different_rule=different_rule)
    ref2 = consensus_numpy(field, th, rule, different_rule, rows=rows)
    np.testing.assert_array_equal(refined.counts, ref2.counts)
    np.testing.assert_allclose(refined.values, ref2.values, atol=1e-6)
    np.testing.assert_allclose(compute_scores(field, refined), scores_numpy(field, refined), atol=1e-6)


def test_ignore_overlap_votes_matches_reference():
    field = _noisy_field()
    got = compute_consensus(field, overlap_votes="ignore", refine=False)
    ref = consensus_numpy(field, overlap_votes="ignore")
    np.testing.assert_allclose(got.values, ref.values, atol=1e-6)
    assert (got.counts >= 0).all()


def test_different_votes_never_flip_sign_above_half():
    # a patch value 0.75 next to 0.65: "< TH" with TH = 0.7 makes it a "different" vote whose original
    # normalisation (0.75 * 0.35 - 0.49) / 0.51 would be positive
    ps = (1, 3, 3)
    p = np.zeros((9, 1, 1, 3), dtype=np.float32)
    p[4, 0, 0, 0] = 0.75  # centre of voxel 0's patch; the other patches are empty and cast no vote
    p[5, 0, 0, 0] = 0.65  # right neighbour of voxel 0
    numinst = np.ones((1, 1, 3), dtype=np.uint8)
    cons = compute_consensus(prepare_field(p, numinst, ps), threshold=0.7, refine=False)
    assert cons.counts.sum() == 1
    lo = min(0.7 ** 2, 0.7 * 0.3)
    np.testing.assert_allclose(cons.values[cons.counts > 0], [-(0.75 * 0.35 - lo) / (1 - lo)], rtol=1e-6)


def test_oracle_scores_are_one_and_memory_formula():
    inst = crossing_worms_2d((1, 40, 40), seed=1)
    ps = (1, 11, 11)
    p, ni = oracle(inst, ps)
    field = prepare_field(p, numinst_from_prob(ni), ps)
    tracemalloc.start()
    cons = compute_consensus(field)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    n_pos = ((4 * 5 + 1) ** 2 - 1) // 2
    assert cons.values.shape == (field.n_members, n_pos)
    assert cons.nbytes() == 6 * field.n_members * n_pos  # documented formula
    # besides the consensus: the voters of each member (12 bytes per window-list entry), the value and
    # window position of each entry (8 bytes) and, for the refinement, one copy of the patch rows and
    # the window row starts (4 (pz py + 1) bytes per voter)
    entries = len(field.vm_pos)
    row_starts = 4 * len(field.voter_coords) * (ps[0] * ps[1] + 1)
    assert peak <= cons.nbytes() + 20 * entries + field.vrows.nbytes + row_starts + 64 * 1024
    # oracle patches: the refinement drops nothing, both passes agree bit for bit
    one = compute_consensus(field, refine=False)
    assert not np.isnan(agreeing_rows_numpy(field, one)).any()
    assert one.values.tobytes() == cons.values.tobytes() and one.counts.tobytes() == cons.counts.tobytes()
    scores = compute_scores(field, cons)
    assert np.allclose(scores, 1.0)
    # documented field formula: 4 P N_fg (patch rows) + 8 padded index volumes + small
    P = int(np.prod(ps))
    assert field.vrows.nbytes == 4 * P * len(field.voter_coords)


def test_wrapper_errors():
    ps = (1, 3, 3)
    good = np.zeros((9, 1, 4, 4), dtype=np.float32)
    ni = np.ones((1, 4, 4), dtype=np.uint8)
    with pytest.raises(InputDataError, match=r"shape \(9, Z, Y, X\)"):
        prepare_field(good[:8], ni, ps)
    bad = good.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(InputDataError, match="NaN"):
        prepare_field(bad, ni, ps)
    with pytest.raises(InputDataError, match=r"\[0, 1\]"):
        prepare_field(good + 2, ni, ps)
    with pytest.raises(InputDataError, match="dtype"):
        prepare_field(good.astype(np.int32), ni, ps)
    with pytest.raises(InputDataError, match="spatial shape"):
        prepare_field(good, ni[:, :3], ps)
    with pytest.raises(InputDataError, match="numinst_prob must have shape"):
        numinst_from_prob(np.zeros((2, 1, 4, 4), dtype=np.float32))
    field = prepare_field(good, ni, ps)
    with pytest.raises(ValueError, match="consensus must be one of"):
        compute_consensus(field, rule="mean")
    with pytest.raises(ValueError, match="different_rule"):
        compute_consensus(field, different_rule="lt")
    with pytest.raises(ValueError, match="patch_threshold"):
        compute_consensus(field, threshold=1.5)
    # uint8 means value / 255, float16 is accepted
    p8 = np.full((9, 1, 4, 4), 255, dtype=np.uint8)
    assert prepare_field(p8, ni, ps).vrows.max() == 1.0
    assert prepare_field(good.astype(np.float16), ni, ps).vrows.dtype == np.float32


def test_prepare_field_converts_only_foreground_rows():
    """uint8 patches are gathered before the float32 conversion: the field costs 4 P bytes per
    foreground voxel, not per voxel (a vote block's read box is mostly background on sparse data)."""
    ps = (5, 5, 5)
    p, ni = oracle(crossing_tubes_3d((40, 40, 40), 2), ps)
    p8 = (p * 255).astype(np.uint8)
    numinst = numinst_from_prob(ni)
    n_fg = int((numinst > 0).sum())
    assert n_fg < 0.1 * numinst.size
    tracemalloc.start()
    field = prepare_field(p8, numinst, ps)
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    assert field.vrows.dtype == np.float32 and field.vrows.shape == (n_fg, p.shape[0])
    # rows (uint8 gather + float32) and index volumes; converting the whole block would need 4 P V bytes
    assert peak < 4 * p.shape[0] * numinst.size / 4
    np.testing.assert_array_equal(field.vrows, prepare_field(p, numinst, ps).vrows)

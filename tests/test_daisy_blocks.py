"""daisy 2 enumerates our block grids and orders chained stages exactly as ppp_dist.geometry / vote do."""

from __future__ import annotations

import math
import random

import pytest
from _daisy_blocks import (
    DAISY_TESTED,
    chained_dependencies,
    conflict_waves,
    daisy_graph,
    daisy_pipeline,
    daisy_task_rois,
    daisy_waves,
    our_block_id,
    to_daisy_blocks,
    to_daisy_task,
)
from hypothesis import given, settings
from hypothesis import strategies as st

from ppp_dist.geometry import BlockGrid, Box
from ppp_dist.pipeline.vote import vote_blocks_touching

daisy = pytest.importorskip("daisy.v2")

FAST = settings(max_examples=60, deadline=None)


def test_installed_daisy_is_the_tested_version():
    assert daisy.__version__ == DAISY_TESTED


@st.composite
def grids(draw, *, with_roi: bool = True, max_side: int = 24) -> BlockGrid:
    """2D as Z = 1 or 3D; odd shapes, blocks that do not divide the volume, halos up to beyond the block."""
    flat = draw(st.booleans())
    vol = tuple(1 if flat and ax == 0 else draw(st.integers(1, max_side)) for ax in range(3))
    block = tuple(1 if flat and ax == 0 else draw(st.integers(1, max(1, v + 2))) for ax, v in enumerate(vol))
    halo = tuple(0 if flat and ax == 0 else draw(st.integers(0, 9)) for ax in range(3))
    roi = None
    if with_roi and draw(st.booleans()):
        begin = tuple(draw(st.integers(0, v - 1)) for v in vol)
        end = tuple(draw(st.integers(b + 1, v)) for b, v in zip(begin, vol))
        roi = Box(begin, end)
    return BlockGrid(vol, block, halo, roi=roi)


@st.composite
def stage_pairs(draw, *, max_side: int = 24) -> tuple[BlockGrid, BlockGrid]:
    """(upstream, downstream) grids over one volume and one region: same or other block shape, other halos."""
    up = draw(grids(max_side=max_side))
    flat = up.volume_shape[0] == 1
    halo = tuple(0 if flat and ax == 0 else draw(st.integers(0, 9)) for ax in range(3))
    if draw(st.booleans()):  # the pipeline's case: one block shape, the stages' own halos
        block = up.block_shape
    else:
        block = tuple(1 if flat and ax == 0 else draw(st.integers(1, v + 2)) for ax, v in enumerate(up.roi.shape))
    return up, BlockGrid(up.volume_shape, block, halo, roi=up.roi)


# -- (a) the description ---------------------------------------------------------------------------


def test_rois_of_a_grid():
    grid = BlockGrid((1, 40, 37), (1, 16, 16), (0, 4, 3))
    r = daisy_task_rois(grid)
    assert (tuple(r.total_roi.offset), tuple(r.total_roi.shape)) == ((0, -4, -3), (1, 48, 43))
    assert (tuple(r.read_roi.offset), tuple(r.read_roi.shape)) == ((0, 0, 0), (1, 24, 22))
    assert (tuple(r.write_roi.offset), tuple(r.write_roi.shape)) == ((0, 4, 3), (1, 16, 16))
    assert r.fit == "shrink"
    task = to_daisy_task(grid, "vote")
    assert (task.fit, task.read_write_conflict, list(task.block_grid_shape)) == ("shrink", False, [1, 3, 3])


# -- (b) daisy's enumeration equals ours -------------------------------------------------------------


def _check_enumeration(grid: BlockGrid) -> None:
    blocks = to_daisy_blocks(grid)
    assert [b.block_id for b in blocks] == list(range(grid.num_blocks))  # a bijection onto our ids
    assert len({b.daisy_id for b in blocks}) == grid.num_blocks
    volume = Box.from_shape(grid.volume_shape)
    for ours, theirs in zip(grid, blocks):
        assert theirs.write_box == ours.write_box
        assert theirs.read_box == ours.read_box_unclipped  # daisy does not clip to the volume ...
        assert theirs.read_box.intersect(volume) == ours.read_box  # ... ours does


@FAST
@given(grids())
def test_daisy_enumerates_our_blocks(grid):
    _check_enumeration(grid)


@pytest.mark.parametrize("volume, block, halo", [
    ((1, 1, 1), (1, 1, 1), (0, 0, 0)),
    ((1, 37, 53), (1, 16, 16), (0, 11, 11)),  # 2D, blocks that do not divide, halo < block
    ((1, 10, 10), (1, 64, 64), (0, 5, 5)),  # one block larger than the volume
    ((9, 33, 31), (4, 8, 7), (9, 9, 9)),  # halo larger than the block
    ((17, 64, 64), (8, 32, 32), (3, 8, 8)),
])
def test_daisy_enumerates_our_blocks_examples(volume, block, halo):
    _check_enumeration(BlockGrid(volume, block, halo))
    begin = tuple(min(v - 1, o) for v, o in zip(volume, (0, 1, 2)))
    _check_enumeration(BlockGrid(volume, block, halo, roi=Box(begin, volume)))


def test_other_fit_modes_differ_from_ours():
    """Why fit="shrink": "valid" drops the border blocks, "overhang" keeps their full size outside the ROI."""
    grid = BlockGrid((1, 40), (1, 16), (0, 4))  # write boxes [0,16) [16,32) [32,40)
    r = daisy_task_rois(grid)
    for fit, writes in [("valid", [(0, 16), (16, 32)]), ("overhang", [(0, 16), (16, 32), (32, 48)]),
                        ("shrink", [(0, 16), (16, 32), (32, 40)])]:
        g = daisy.BlockwiseDependencyGraph("t", r.read_roi, r.write_roi, False, fit, total_read_roi=r.total_roi)
        got = sorted((b.write_roi.begin[1], b.write_roi.end[1]) for b, _ in g.enumerate_all_dependencies())
        assert got == writes, fit


# -- (c) chained stages ------------------------------------------------------------------------------


def _expected(up: BlockGrid, down: BlockGrid) -> dict[int, list[int]]:
    return {d.block_id: vote_blocks_touching(d.read_box, up) for d in down}


@FAST
@given(stage_pairs())
def test_chained_dependencies_match_vote_blocks_touching(pair):
    up, down = pair
    assert chained_dependencies(up, down) == _expected(up, down)


def test_chained_dependencies_vote_then_paint():
    vote = BlockGrid((1, 10, 13), (1, 4, 5), (0, 1, 1))
    paint = BlockGrid((1, 10, 13), (1, 4, 5), (0, 2, 2))
    deps = chained_dependencies(vote, paint)
    assert deps[0] == [0, 1, 3, 4]  # a corner block reads its 3 neighbours' cores
    assert deps[4] == list(range(9))  # the centre block reads all 9
    assert deps == _expected(vote, paint)


@settings(max_examples=25, deadline=None)
@given(stage_pairs(max_side=14), st.randoms(use_true_random=False))
def test_scheduler_releases_a_downstream_block_once_its_upstream_blocks_are_done(pair, rng):
    """Finish upstream blocks one at a time in random order; daisy hands out exactly the downstream
    blocks whose upstream blocks (vote_blocks_touching of the read box) have all finished."""
    up, down = pair
    need = {d: set(u) for d, u in _expected(up, down).items()}
    sched = daisy.Scheduler(daisy_pipeline([("vote", up), ("paint", down)]))
    ups = []
    while (b := sched.acquire_block("vote")) is not None:
        ups.append(b)
    assert sorted(our_block_id(up, b) for b in ups) == list(range(up.num_blocks))
    rng.shuffle(ups)
    done, released = set(), set()
    ready = {d for d, u in need.items() if not u}  # downstream blocks that read no upstream write box
    for b in [None] + ups:
        if b is not None:
            b.status = daisy.BlockStatus.SUCCESS
            sched.release_block(b)
            done.add(our_block_id(up, b))
        while (p := sched.acquire_block("paint")) is not None:
            released.add(our_block_id(down, p))
        assert released == ready | {d for d, u in need.items() if u <= done}
    assert released == set(range(down.num_blocks))


def test_stages_over_different_regions_are_refused():
    whole = BlockGrid((1, 30, 30), (1, 10, 10))
    part = BlockGrid((1, 30, 30), (1, 10, 10), roi=Box((0, 0, 0), (1, 10, 30)))
    with pytest.raises(ValueError, match="same roi"):
        daisy_pipeline([("vote", part), ("paint", whole)])
    with pytest.raises(ValueError, match="same roi"):
        chained_dependencies(part, whole)


def test_why_different_regions_are_refused(tmp_path, monkeypatch):
    """daisy 2.0.0 itself, without our check: (1) it links through the unshrunk upstream write ROI, (2) it
    strands a downstream block that reads no upstream block, (3) it refuses some such pipelines."""
    up = BlockGrid((1, 30), (1, 8), roi=Box((0, 0), (1, 10)))  # writes [0,8) [8,10); unshrunk [8,16)
    down = BlockGrid((1, 30), (1, 6), roi=Box((0, 6), (1, 18)))  # writes [6,12) [12,18)
    sched = daisy.Scheduler(to_daisy_task(up, "vote") + to_daisy_task(down, "paint"))
    deps = sched.dependency_graph
    blocks = {our_block_id(down, b): b for b, _ in daisy_graph(down, "paint").enumerate_all_dependencies()}
    assert [our_block_id(up, u) for u in deps.upstream(blocks[1])] == [1]  # [12,18) meets only unshrunk [8,16)
    assert vote_blocks_touching(down[1].read_box, up) == []

    up = BlockGrid((1, 30), (1, 10), (0, 2), roi=Box((0, 0), (1, 10)))
    down = BlockGrid((1, 30), (1, 10), (0, 2))  # block 2 reads [18,32): nothing the upstream writes
    sched = daisy.Scheduler(to_daisy_task(up, "vote") + to_daisy_task(down, "paint"))
    for name in ("vote", "paint", "paint"):
        while (block := sched.acquire_block(name)) is not None:
            block.status = daisy.BlockStatus.SUCCESS
            sched.release_block(block)
    paint = sched.task_states["paint"]
    assert (paint.completed_count, paint.pending_count, paint.failed_count, paint.orphaned_count) == (2, 1, 0, 0)
    a, b = to_daisy_task(up, "vote"), to_daisy_task(down, "paint")
    a.process_function = b.process_function = lambda block: None
    monkeypatch.chdir(tmp_path)  # run_blockwise writes worker logs into ./daisy_logs
    assert daisy.run_blockwise(a + b, multiprocessing=False, progress=False) is False  # returns, no hang

    up = BlockGrid((1, 30), (1, 10), roi=Box((0, 0), (1, 10)))
    with pytest.raises(ValueError, match="read nothing"):
        daisy.Scheduler(to_daisy_task(up, "vote") + to_daisy_task(BlockGrid((1, 30), (1, 10)), "paint"))


def test_daisy_panics_on_bad_input():
    """Why the module only hands daisy blocks that daisy enumerated: bad input is a Rust panic, a
    BaseException that ``except Exception`` does not catch."""
    r = daisy_task_rois(BlockGrid((1, 10, 10), (1, 4, 4), (0, 1, 1)))
    with pytest.raises(BaseException, match="unknown fit mode") as err:
        daisy.BlockwiseDependencyGraph("t", r.read_roi, r.write_roi, False, "bogus", total_read_roi=r.total_roi)
    assert not isinstance(err.value, Exception)
    graph = daisy_graph(BlockGrid((1, 10, 10), (1, 4, 4), (0, 1, 1)), "t", read_write_conflict=True)
    by = daisy.Coordinate((0, 1, 1))
    off_grid = daisy.Block(r.total_roi, r.read_roi.shift(by), r.write_roi.shift(by), task_id="t")
    with pytest.raises(BaseException, match="not found in level offsets"):
        graph.upstream(off_grid)  # a panic inside daisy, whatever the wrapper
    with pytest.raises(TypeError, match="total_write_roi"):  # listed in daisy/_daisy.pyi, not accepted
        daisy.BlockwiseDependencyGraph("t", r.read_roi, r.write_roi, False, "shrink", total_write_roi=r.total_roi)


def test_waves_of_the_pipeline_chain():
    """predict -> vote -> agglomerate (global: one block) -> paint: the global step is a barrier."""
    volume = (1, 20, 26)
    stages = [("predict", BlockGrid(volume, (1, 10, 13))), ("vote", BlockGrid(volume, (1, 10, 13), (0, 3, 3))),
              ("agglomerate", BlockGrid(volume, volume)), ("paint", BlockGrid(volume, (1, 10, 13), (0, 1, 1)))]
    assert daisy_waves(stages) == [{"predict": [0, 1, 2, 3]}, {"vote": [0, 1, 2, 3]}, {"agglomerate": [0]},
                                   {"paint": [0, 1, 2, 3]}]


def test_waves_without_barrier_interleave_stages():
    """Without the global step a paint block may start while far-away vote blocks still run (daisy's order
    is finer than our runner's stage-after-stage order)."""
    volume = (1, 8, 40)
    vote, paint = BlockGrid(volume, (1, 8, 8), (0, 2, 2)), BlockGrid(volume, (1, 8, 8), (0, 2, 2))
    sched = daisy.Scheduler(daisy_pipeline([("vote", vote), ("paint", paint)]))
    while (b := sched.acquire_block("vote")) is not None:
        if our_block_id(vote, b) in (0, 1):
            b.status = daisy.BlockStatus.SUCCESS
            sched.release_block(b)
    p = sched.acquire_block("paint")
    assert p is not None and our_block_id(paint, p) == 0  # vote blocks 2..4 are still "processing"


# -- intra-stage conflict levels ---------------------------------------------------------------------


def _levels_expected(grid: BlockGrid) -> int:
    n = 1
    for blocks, b, h in zip(grid.shape, grid.block_shape, grid.halo):
        if blocks > 1 and h > 0:
            n *= min(blocks, math.ceil((b + h) / b))
    return n


@FAST
@given(grids())
def test_conflict_waves(grid):
    waves = conflict_waves(grid)
    assert sorted(i for w in waves for i in w) == list(range(grid.num_blocks))
    assert len(waves) == daisy_graph(grid, read_write_conflict=True).num_levels
    assert len(waves) == _levels_expected(grid)
    for wave in waves:
        specs = [grid[i] for i in wave]
        for a in specs:
            for b in specs:
                if a is not b:
                    assert a.read_box_unclipped.intersect(b.write_box).empty, (a.block_id, b.block_id)


def test_conflict_waves_in_3d():
    assert len(conflict_waves(BlockGrid((40, 40, 40), (8, 8, 8), (2, 2, 2)))) == 8
    assert len(conflict_waves(BlockGrid((40, 40, 40), (8, 8, 8), (0, 0, 0)))) == 1


def test_many_blocks_are_cheap():
    grid = BlockGrid((256, 256, 256), (8, 16, 16), (4, 8, 8))  # 8192 blocks
    blocks = to_daisy_blocks(grid)
    assert len(blocks) == grid.num_blocks
    rng = random.Random(0)
    for i in rng.sample(range(grid.num_blocks), 50):
        assert blocks[i].write_box == grid[i].write_box

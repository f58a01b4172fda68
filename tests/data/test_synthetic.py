"""Sample helpers; synthetic scenes (counts, overlaps, touching, determinism, stitching); the writer."""

import importlib.util
import itertools
from pathlib import Path

import numpy as np
import pytest

from ppp_dist.data import Sample, channel_stack_from_flat, instance_ids, instance_masks
from ppp_dist.data.synthetic import (
    crossing_tubes_3d,
    crossing_worms_2d,
    make_scene,
    touching_nuclei_2d,
    touching_nuclei_3d,
)
from ppp_dist.data.writer import write_synthetic_volume
from ppp_dist.errors import InputDataError, StorageError
from ppp_dist.geometry import Box
from ppp_dist.ops.patches import numinst_target

# kind -> (generator, small shape, count keyword, count): small enough for a fast suite
CASES = {
    "tubes": (crossing_tubes_3d, (32, 40, 36), "n_tubes", 5),
    "worms": (crossing_worms_2d, (96, 112), "n_worms", 6),
    "nuclei2d": (touching_nuclei_2d, (96, 112), "n", 12),
    "nuclei3d": (touching_nuclei_3d, (32, 40, 36), "n", 8),
}
SMALL_NUCLEUS_RADIUS = {"nuclei2d": (4.0, 9.0), "nuclei3d": (3.0, 6.0)}


def generate(kind, seed=0, shape=None, **extra):
    func, default_shape, count_key, count = CASES[kind]
    kwargs = {count_key: count, "seed": seed, **extra}
    if kind in SMALL_NUCLEUS_RADIUS:
        kwargs.setdefault("radius", SMALL_NUCLEUS_RADIUS[kind])
    return func(shape or default_shape, **kwargs)


def tiles(shape, block):
    for begin in itertools.product(*(range(0, s, b) for s, b in zip(shape, block))):
        yield Box(begin, tuple(min(b + k, s) for b, k, s in zip(begin, block, shape)))


def has_touching_pair(labels):
    """True if two 6-adjacent voxels carry different non-zero ids. labels: (Z, Y, X)."""
    for axis in range(3):
        a = np.moveaxis(labels, axis, 0)
        u, v = a[:-1], a[1:]
        if np.any((u != v) & (u > 0) & (v > 0)):
            return True
    return False


# --- Sample and helpers --------------------------------------------------------------------------

def test_channel_stack_numinst_ids_masks():
    stack = channel_stack_from_flat(np.array([[0, 3, 3], [5, 5, 0]]))
    assert stack.shape == (1, 1, 2, 3) and stack.dtype == np.uint16
    two = np.concatenate([stack, np.array([[[[0, 7, 7], [7, 0, 0]]]], dtype=np.uint16)])
    assert numinst_target(two).tolist() == [[[0, 2, 2], [2, 1, 0]]]
    assert numinst_target(two, max_num_inst=1).max() == 1
    assert instance_ids(two).tolist() == [3, 5, 7]
    masks = dict(instance_masks(two))
    assert sorted(masks) == [3, 5, 7]
    assert masks[7].sum() == 3 and masks[7].dtype == bool and masks[7].shape == (1, 2, 3)


def test_helpers_reject_bad_input():
    with pytest.raises(InputDataError, match=r"\[0, 65535\]"):
        channel_stack_from_flat(np.array([[70000]]))
    with pytest.raises(InputDataError, match="channel stack"):
        numinst_target(np.zeros((4, 4), np.uint16))
    with pytest.raises(InputDataError, match="float32"):
        Sample(raw=np.zeros((1, 1, 2, 2)), instances=np.zeros((1, 1, 2, 2), np.uint16))
    with pytest.raises(InputDataError, match="spatial shape"):
        Sample(raw=np.zeros((1, 1, 2, 2), np.float32), instances=np.zeros((1, 1, 2, 3), np.uint16))


# --- generators -----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind", CASES)
def test_counts_dtypes_and_ranges(kind):
    sample = generate(kind)
    count = CASES[kind][3]
    assert sample.raw.dtype == np.float32 and sample.instances.dtype == np.uint16
    assert 0.0 <= sample.raw.min() and sample.raw.max() <= 1.0
    assert instance_ids(sample.instances).tolist() == list(range(1, count + 1))
    expected_c = {"tubes": 3}.get(kind, 1)
    assert sample.num_channels == expected_c
    if kind in ("worms", "nuclei2d"):
        assert sample.is_2d
    if kind in ("tubes", "worms"):  # one instance per channel by default, like FlyLight
        assert sample.num_layers == count
        assert all(len(instance_ids(sample.instances[c:c + 1])) == 1 for c in range(count))
    else:
        assert sample.num_layers == 1


@pytest.mark.parametrize("kind", ["tubes", "worms"])
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_curves_overlap(kind, seed):
    sample = generate(kind, seed=seed)
    assert np.count_nonzero(numinst_target(sample.instances) >= 2) > 0


@pytest.mark.parametrize("kind", ["nuclei2d", "nuclei3d"])
@pytest.mark.parametrize("seed", [0, 1])
def test_nuclei_touch_but_do_not_overlap(kind, seed):
    sample = generate(kind, seed=seed)
    assert sample.num_layers == 1  # flat labels: overlap is impossible by construction
    assert has_touching_pair(sample.instances[0])
    assert numinst_target(sample.instances).max() == 1


@pytest.mark.parametrize("kind", CASES)
def test_determinism_by_seed(kind):
    a, b, c = generate(kind, seed=7), generate(kind, seed=7), generate(kind, seed=8)
    assert a.raw.tobytes() == b.raw.tobytes()
    assert a.instances.tobytes() == b.instances.tobytes()
    assert a.raw.tobytes() != c.raw.tobytes()
    assert a.instances.tobytes() != c.instances.tobytes()


@pytest.mark.parametrize("kind, shape, count", [
    ("tubes", (17, 23, 29), 3), ("tubes", (1, 37, 53), 3), ("worms", (1, 37, 53), 2),
    ("worms", (37, 53), 2), ("nuclei2d", (1, 37, 53), 2), ("nuclei3d", (17, 23, 29), 2),
])
def test_odd_shapes(kind, shape, count):
    func, _, count_key, _ = CASES[kind]
    extra = {"radius": (2.0, 4.0)} if kind.startswith("nuclei") else {}
    sample = func(shape, **{count_key: count}, seed=3, **extra)
    assert sample.raw.shape[1:] == (shape if len(shape) == 3 else (1, *shape))
    assert instance_ids(sample.instances).tolist() == list(range(1, count + 1))
    if kind in ("tubes", "worms"):
        assert np.count_nonzero(numinst_target(sample.instances) >= 2) > 0


def test_counts_scale_with_volume():
    assert make_scene("tubes", (64, 64, 64)).num_instances == 4
    assert make_scene("tubes", (128, 128, 128)).num_instances == 32
    assert make_scene("worms", (512, 512)).num_instances == 32
    assert make_scene("nuclei3d", (128, 64, 64)).num_instances == 40


def test_packed_channels_keep_every_instance():
    per_instance = make_scene("tubes", (48, 48, 48), seed=4, n_tubes=12).to_sample()
    packed = make_scene("tubes", (48, 48, 48), seed=4, n_tubes=12, channels="packed").to_sample()
    assert packed.num_layers < per_instance.num_layers
    for (i, a), (j, b) in zip(instance_masks(per_instance.instances),
                              instance_masks(packed.instances), strict=True):
        assert i == j and np.array_equal(a, b)
    np.testing.assert_array_equal(packed.raw, per_instance.raw)


# --- render(box) ----------------------------------------------------------------------------------

@pytest.mark.parametrize("kind, shape, block, params", [
    ("tubes", (33, 41, 37), (13, 17, 11), {"n_tubes": 6, "channels": "packed"}),
    ("worms", (1, 97, 83), (1, 33, 29), {"n_worms": 5}),
    ("nuclei2d", (1, 90, 77), (1, 31, 37), {"n": 10, "radius": (4.0, 9.0)}),
    ("nuclei3d", (30, 34, 31), (7, 19, 23), {"n": 8, "radius": (3.0, 6.0)}),
])
def test_render_by_box_stitches_exactly(kind, shape, block, params):
    scene = make_scene(kind, shape, seed=11, **params)
    raw, instances = scene.render()
    stitched_raw, stitched_inst = np.empty_like(raw), np.empty_like(instances)
    for box in tiles(shape, block):
        r, i = scene.render(box)
        stitched_raw[(slice(None), *box.slices)] = r
        stitched_inst[(slice(None), *box.slices)] = i
    assert stitched_raw.tobytes() == raw.tobytes()
    assert stitched_inst.tobytes() == instances.tobytes()
    # a box sticking out of the volume agrees on the overlap too
    outer = Box((0, -5, -3), (shape[0], shape[1] // 2, shape[2] + 4))
    r, i = scene.render(outer)
    inner = outer.intersect(scene.volume)
    np.testing.assert_array_equal(r[(slice(None), *inner.relative_to(outer))],
                                  raw[(slice(None), *inner.slices)])
    np.testing.assert_array_equal(i[(slice(None), *inner.relative_to(outer))],
                                  instances[(slice(None), *inner.slices)])


def test_render_only_visits_objects_near_the_box():
    scene = make_scene("tubes", (256, 256, 256), seed=0, channels="packed")
    box = Box((0, 0, 0), (32, 32, 32))
    near = scene.objects_in(box)
    assert 0 < len(near) < scene.num_instances // 10
    _, instances = scene.render(box)
    assert set(instance_ids(instances).tolist()) <= set((near + 1).tolist())
    far = Box((1000, 1000, 1000), (1010, 1010, 1010))
    assert len(scene.objects_in(far)) == 0 and not scene.render(far)[1].any()


def test_bad_parameters_raise_with_a_reason():
    with pytest.raises(ValueError, match="unknown synthetic kind"):
        make_scene("blobs", (8, 8, 8))
    with pytest.raises(ValueError, match="radius"):
        crossing_tubes_3d((16, 16, 16), radius=(0.5, 2.0))
    with pytest.raises(ValueError, match="Z = 1"):
        crossing_worms_2d((4, 16, 16))
    with pytest.raises(ValueError, match="lower n or radius"):
        touching_nuclei_3d((8, 8, 8), n=12, radius=(5.0, 6.0))


# --- writer ---------------------------------------------------------------------------------------

def test_blockwise_write_equals_in_memory(tmp_path):
    import zarr

    info = write_synthetic_volume(tmp_path / "t.zarr", "tubes", (48, 48, 48), (16, 20, 48), seed=2,
                                  n_tubes=6)
    expected = make_scene("tubes", (48, 48, 48), seed=2, n_tubes=6, channels="packed").to_sample()
    group = zarr.open_group(tmp_path / "t.zarr", mode="r")
    assert group["raw"].shape == (3, 48, 48, 48) and group["raw"].dtype == np.float32
    assert group["labels/gt_instances"].shape == (info.num_layers, 48, 48, 48)
    assert group["labels/gt_instances"].chunks == (1, 16, 20, 48)
    assert group["raw"][...].tobytes() == expected.raw.tobytes()
    assert group["labels/gt_instances"][...].tobytes() == expected.instances.tobytes()
    assert group.attrs["ppp_dist"]["synthetic"]["num_instances"] == 6
    assert info.num_blocks == 3 * 3 * 1


def test_parallel_uint8_write_and_existing_path(tmp_path):
    import zarr

    info = write_synthetic_volume(tmp_path / "w.zarr", "worms", (64, 72), (32, 32), seed=1,
                                  raw_dtype="uint8", n_workers=2, n_worms=4)
    assert info.shape == (1, 64, 72) and info.chunks == (1, 32, 32)
    expected = make_scene("worms", (64, 72), seed=1, n_worms=4, channels="packed").to_sample()
    group = zarr.open_group(tmp_path / "w.zarr", mode="r")
    np.testing.assert_array_equal(group["raw"][...], np.rint(expected.raw * np.float32(255)))
    np.testing.assert_array_equal(group["labels/gt_instances"][...], expected.instances)
    with pytest.raises(StorageError, match="already exists"):
        write_synthetic_volume(tmp_path / "w.zarr", "worms", (64, 72), (32, 32))


def test_writer_refuses_huge_blocks_before_writing(tmp_path):
    with pytest.raises(ValueError, match="channels='packed'"):
        write_synthetic_volume(tmp_path / "big.zarr", "tubes", (256, 256, 256), (256, 256, 256),
                               channels="per_instance")
    assert not (tmp_path / "big.zarr").exists()


def test_script_writes_a_volume(tmp_path):
    script = Path(__file__).parents[2] / "scripts" / "make_synthetic_volume.py"
    spec = importlib.util.spec_from_file_location("make_synthetic_volume", script)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path / "n.zarr"
    argv = ["--kind", "nuclei3d", "--shape", "20", "24", "28", "--chunks", "10", "12", "28",
            "--seed", "5", "--out", str(out)]
    assert module.main(argv) == 0
    assert (out / "labels" / "gt_instances" / "zarr.json").is_file()
    assert module.main(argv) == 2  # exists: one-line error, exit code 2

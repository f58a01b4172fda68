"""docs/viewing.md: the outputs are OME-Zarr 0.5 that zarr, OME-Zarr readers and an HTTP server hand out.

Real outputs: a prediction written by ``predict_volume`` (a small untrained network) and instances with overlap
channels written by the blockwise pipeline (crossing worms labelled from ideal patches, in this process).
The code blocks of docs/viewing.md are run (plain zarr, the CORS server) or compiled (napari). The
``ome-zarr`` reader and the ``ome-zarr-models`` validator are used when installed (not project dependencies).
"""

from __future__ import annotations

import re
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import numpy as np
import pytest
import zarr

from ppp_dist.io import volumes

REPO = Path(__file__).resolve().parents[1]
DOC = REPO / "docs" / "viewing.md"
PATCH = (1, 9, 9)


def _code_blocks(marker: str) -> str:
    """The ```python block that follows the HTML comment containing ``marker`` in docs/viewing.md."""
    text = DOC.read_text()
    at = text.index(marker)
    match = re.compile(r"```python\n(.*?)```", re.S).search(text, at)
    assert match, marker
    return match.group(1)


@pytest.fixture(scope="module")
def outputs(tmp_path_factory):
    import torch

    from ppp_dist.config import config_from_table
    from ppp_dist.data.writer import write_synthetic_volume
    from ppp_dist.learning.model import build_model, save_checkpoint
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets
    from ppp_dist.pipeline.infer import run_pipeline
    from ppp_dist.pipeline.predict import predict_volume

    root = tmp_path_factory.mktemp("viewing")
    sample = root / "worms.zarr"
    write_synthetic_volume(sample, "worms", (80, 80), (40, 40), seed=4, n_worms=3, width=(5, 7))
    gt = np.asarray(volumes.open_array(f"{sample}/labels/gt_instances")[...])
    config = config_from_table({
        "data": {"normalization": "none", "overlapping_instances": True},
        "model": {"patch_shape": list(PATCH), "num_fmaps": 4, "fmap_inc_factors": [2.0], "fmap_dec_factors": [2.0],
                  "downsample_factors": [[1, 2, 2]], "train_input_shape": [1, 44, 44],
                  "predict_input_shape": [1, 44, 44]},
        "prediction": {"device": "cpu"}, "training": {"use_amp": False}, "vote": {"block_shape": [1, 40, 40]}})
    exp = root / "exp"
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        torch.manual_seed(0)
        checkpoint = save_checkpoint(exp / "train" / "checkpoint_1.pt", build_model(config.model, 1), iteration=1)
        predict_volume(config, checkpoint, f"{sample}/raw", exp / "prediction.zarr")
    finally:
        torch.set_num_threads(before)
    oracle = root / "oracle.zarr"  # ideal patches: instances that really cross
    for name, data in (("patches", patch_targets(gt, PATCH) * np.uint8(255)),
                       ("numinst", (numinst_onehot(numinst_target(gt)) * 255).astype(np.uint8))):
        volumes.prepare_array(f"{oracle}/{name}", shape=data.shape, chunks=data.shape, dtype="uint8",
                              axes="czyx")[...] = data
    result = run_pipeline(config, exp, client=None, prediction=str(oracle))
    assert result.ok and result.output == f"{exp}/instances.zarr/instances"
    return {"exp": exp, "sample": sample}


def _ome(group_path: Path) -> dict:
    group = zarr.open_group(group_path, mode="r")
    assert group.metadata.zarr_format == 3
    return group.attrs["ome"]


def _check_multiscale(entry: dict, name: str, arr: zarr.Array) -> None:
    assert entry["name"] == name
    assert [(a["name"], a["type"]) for a in entry["axes"]] == [("c", "channel"), ("z", "space"), ("y", "space"),
                                                               ("x", "space")]
    (dataset,) = entry["datasets"]
    assert dataset["path"] == name
    scale, translation = dataset["coordinateTransformations"]
    assert scale == {"type": "scale", "scale": [1.0, 1.0, 1.0, 1.0]}
    assert translation == {"type": "translation", "translation": [0.0, 0.0, 0.0, 0.0]}
    assert list(arr.metadata.dimension_names) == ["c", "z", "y", "x"]


def test_instances_are_ome_zarr_labels_with_overlap_channels(outputs):
    store = outputs["exp"] / "instances.zarr"
    ome = _ome(store)
    assert ome["version"] == "0.5"
    instances = zarr.open_array(store / "instances", mode="r")
    (entry,) = ome["multiscales"]
    _check_multiscale(entry, "instances", instances)
    assert ome["image-label"]["colors"][0] == {"label-value": 0, "rgba": [0, 0, 0, 0]}
    assert instances.dtype == np.uint32 and instances.shape == (2, 1, 80, 80)
    labels = np.asarray(instances[...])
    assert len(np.unique(labels[0])) - 1 >= 3  # three worms
    assert (labels[1] > 0).sum() > 20  # they cross: a second label where two overlap
    assert not ((labels[1] > 0) & (labels[0] == 0)).any()  # labels fill the lowest channels
    assert set(np.unique(labels[1])) <= set(np.unique(labels[0]))  # one id = one instance in both channels


def test_prediction_is_ome_zarr_image_group(outputs):
    store = outputs["exp"] / "prediction.zarr"
    ome = _ome(store)
    group = zarr.open_group(store, mode="r")
    names = [entry["name"] for entry in ome["multiscales"]]
    assert sorted(names) == sorted(group.array_keys()) and "patches" in names
    assert "image-label" not in ome
    for entry in ome["multiscales"]:
        _check_multiscale(entry, entry["name"], group[entry["name"]])
    assert group["patches"].shape == (int(np.prod(PATCH)), 1, 80, 80) and group["patches"].dtype == np.uint8


def test_plain_zarr_block_of_the_docs_runs(outputs):
    code = _code_blocks("tested: tests/test_viewing.py runs this block")
    paths = {"exp": str(outputs["exp"]), "raw_path": f"{outputs['sample']}/raw", "patch_shape": PATCH}
    for name, value in paths.items():
        code, n = re.subn(rf"^{name} = .*$", f"{name} = {value!r}", code, count=1, flags=re.M)
        assert n == 1, name
    namespace: dict = {}
    exec(compile(code, str(DOC), "exec"), namespace)
    assert namespace["raw"].shape == (1, 1, 80, 80)
    assert namespace["instances"].shape == (2, 1, 80, 80)
    assert len(namespace["ids"]) >= 3 and namespace["overlap"].any()
    assert namespace["patch"].shape == PATCH and 0.0 <= namespace["patch"].min() <= namespace["patch"].max() <= 1.0
    assert namespace["ome"]["image-label"] and namespace["voxel_size"] == (1.0, 1.0, 1.0)


def test_napari_block_of_the_docs_compiles():
    code = _code_blocks("tested: tests/test_viewing.py compiles this block")
    compile(code, str(DOC), "exec")
    assert "add_labels(instances[1]" in code


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_cors_server_of_the_docs_serves_the_chunks(outputs, tmp_path):
    server = tmp_path / "serve_zarr.py"
    server.write_text(_code_blocks("tested: tests/test_viewing.py runs this server"))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(server), str(outputs["exp"]), str(port)],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        assert proc.stdout.readline().startswith(f"serving {outputs['exp']} on http://127.0.0.1:{port}")
        chunk = next(p for p in sorted((outputs["exp"] / "instances.zarr" / "instances" / "c").rglob("*"))
                     if p.is_file())
        for path in (outputs["exp"] / "instances.zarr" / "zarr.json", chunk):
            rel = path.relative_to(outputs["exp"]).as_posix()
            deadline = time.monotonic() + 10
            while True:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/{rel}", timeout=5) as response:
                        assert response.headers["Access-Control-Allow-Origin"] == "*"
                        assert response.read() == path.read_bytes()
                    break
                except ConnectionError:
                    assert time.monotonic() < deadline
                    time.sleep(0.1)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


def test_ome_zarr_reader_opens_the_outputs(outputs):
    pytest.importorskip("ome_zarr", reason="the ome-zarr reader (pip install ome-zarr) is not installed")
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Label, Multiscales, Reader

    (node,) = list(Reader(parse_url(str(outputs["exp"] / "instances.zarr")))())
    assert node.load(Label) and node.load(Multiscales)
    assert [a["name"] for a in node.metadata["axes"]] == ["c", "z", "y", "x"]
    np.testing.assert_array_equal(np.asarray(node.data[0]), zarr.open_array(
        outputs["exp"] / "instances.zarr" / "instances", mode="r")[...])
    (node,) = list(Reader(parse_url(str(outputs["exp"] / "prediction.zarr")))())
    assert node.load(Multiscales) and not node.load(Label)
    assert node.data[0].shape[1:] == (1, 80, 80)


def test_ome_zarr_models_validates_the_outputs(outputs):
    pytest.importorskip("ome_zarr_models", reason="ome-zarr-models (pip install ome-zarr-models) is not installed")
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.image import Image
    from ome_zarr_models.v05.image_label import ImageLabel

    assert isinstance(open_ome_zarr(zarr.open_group(outputs["exp"] / "instances.zarr", mode="r")), ImageLabel)
    assert isinstance(open_ome_zarr(zarr.open_group(outputs["exp"] / "prediction.zarr", mode="r")), Image)

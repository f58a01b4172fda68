"""Damaged, crafted and hostile inputs of the bad-input sweep (issue #15): files that are not UTF-8, truncated
zarr metadata, checkpoints whose weights do not fit, crafted shapes, label ids out of the usual range,
predictions and raw values the network cannot take, and the setups of the security rows (a live lock, a
config that tries a job-script injection, servers that are not dask schedulers, a full disk, a read-only
experiment). ``make_hostile_inputs`` adds them to the shared inputs of ``_sweep_inputs.make_inputs``.
"""

from __future__ import annotations

import http.server
import json
import os
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import numpy as np
import pytest
import zarr

HUGE = 10 ** 7  # a 24 KB store may declare (1, 10^7, 10^7) voxels


def _meta_only(path: Path, shape: tuple[int, ...], dtype: str, chunks: tuple[int, ...]) -> None:
    """An array whose metadata declares ``shape``; no chunk is written (what a crafted store is)."""
    zarr.open_group(path.parent, mode="a").create_array(path.name, shape=shape, dtype=dtype, chunks=chunks,
                                                        fill_value=0)


def make_hostile_inputs(d: Path, oracle) -> None:
    """Write the hostile inputs into the shared input folder ``d`` (``oracle`` makes patches from labels)."""
    import torch

    (d / "latin1.toml").write_bytes("[vote]\n# Schwellenwert für Patches\npatch_threshold = 0.6\n".encode("latin-1"))
    shutil.copytree(d / "pred.zarr", d / "truncated.zarr")
    meta = d / "truncated.zarr" / "patches" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:40])
    shutil.copytree(d / "raw.zarr", d / "truncated_raw.zarr")
    meta = d / "truncated_raw.zarr" / "raw" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:30])

    for name, change in (("missing_keys", lambda s: s.pop(next(iter(s)))), ("wrong_shapes", _widen_first),
                         ("nan_weights", _nan_first)):
        state = torch.load(d / "ck.pt", weights_only=True)
        change(state["model_state_dict"])
        torch.save(state, d / f"{name}.pt")
    state = torch.load(d / "ck.pt", weights_only=True)
    state["architecture"] = state["architecture"][:-5]  # a truncated JSON document
    torch.save(state, d / "bad_architecture.pt")

    raw = np.random.default_rng(1).random((1, 4, 16, 16), dtype=np.float32)
    group = zarr.open_group(d / "hostile_raw.zarr", mode="w")
    group.create_array("complex", data=(raw + 1j * raw).astype(np.complex64))
    group.create_array("overflow", data=np.full_like(raw, 1e38))
    _meta_only(d / "huge_raw.zarr" / "raw", (1, 1, HUGE, HUGE), "float32", (1, 1, 4096, 4096))
    _meta_only(d / "huge_pred.zarr" / "patches", (25, 1, HUGE, HUGE), "uint8", (25, 1, 4096, 4096))
    _meta_only(d / "huge_pred.zarr" / "numinst", (3, 1, HUGE, HUGE), "uint8", (3, 1, 4096, 4096))
    _meta_only(d / "wide_pred.zarr" / "patches", (25, 1, 100_000, 100_000), "uint8", (25, 1, 4096, 4096))
    _meta_only(d / "wide_pred.zarr" / "numinst", (3, 1, 100_000, 100_000), "uint8", (3, 1, 4096, 4096))
    _meta_only(d / "big_raw.zarr" / "raw", (1, 8192, 8192, 8192), "uint8", (1, 256, 256, 256))

    gt = np.zeros((1, 1, 24, 24), np.int64)
    gt[0, 0, 2:9, 2:9], gt[0, 0, 12:20, 12:20] = 1, 2
    patches, numinst = oracle(gt.astype(np.uint16))
    wide = patches.astype(np.float32) / 255
    wide[4, 0, 6, 6] = 1.7
    group = zarr.open_group(d / "wide_patches.zarr", mode="w")
    group.create_array("patches", data=wide)
    group.create_array("numinst", data=numinst)
    negative = gt.copy()
    negative[0, 0, 3, 3] = -3
    far = gt.astype(np.uint64) * np.uint64(2 ** 63 + 5)
    near = gt.astype(np.uint32) * np.uint32(2_000_000_000)
    group = zarr.open_group(d / "ids.zarr", mode="w")
    for name, values in (("negative", negative), ("above_2_63", far), ("near_4e9", near)):
        group.create_array(name, data=values)


def _widen_first(state: dict) -> None:
    import torch

    key = next(k for k, v in state.items() if v.ndim > 1)
    state[key] = torch.zeros((state[key].shape[0] + 1, *state[key].shape[1:]))


def _nan_first(state: dict) -> None:
    key = next(k for k, v in state.items() if v.is_floating_point())
    state[key][...] = float("nan")


# ------------------------------------------------------------------------------------------------ setups


def exp_id_not_utf8(tmp, data, request):
    from _sweep_inputs import experiment

    (experiment(tmp, data) / "experiment_id").write_bytes(b"\xff\xfe\x00id")


def exp_truncated_instances(tmp, data, request):
    from _sweep_inputs import exp_with_outputs

    exp_with_outputs(tmp, data, request)
    meta = tmp / "exp" / "instances.zarr" / "instances" / "zarr.json"
    meta.write_bytes(meta.read_bytes()[:50])


def exp_float16_prediction_wanted(tmp, data, request):
    """An experiment holding the uint8 prediction of raw.zarr/raw (TINY network: fg + patches)."""
    from _sweep_inputs import experiment

    group = zarr.open_group(experiment(tmp, data) / "prediction.zarr", mode="w")
    group.create_array("fg", data=np.zeros((1, 4, 16, 16), np.uint8))
    group.create_array("patches", data=np.zeros((25, 4, 16, 16), np.uint8))


def exp_injected_config(tmp, data, request):
    """A shared experiment whose config.toml someone edited to run a command in the next job script."""
    from _sweep_inputs import experiment

    config = experiment(tmp, data) / "config.toml"
    text = config.read_text()
    assert '\nqueue = ""\n' in text
    config.write_text(text.replace('\nqueue = ""\n', '\nqueue = "cpu\\ntouch /tmp/pwned"\n'))


def exp_locked(tmp, data, request):
    """An experiment held by a live run of this host (a sleeping process stands in for it)."""
    from _sweep_inputs import experiment

    from ppp_dist.lock import LOCK_NAME, _process_start

    path = experiment(tmp, data)
    holder = subprocess.Popen(["sleep", "600"])
    request.addfinalizer(lambda: (holder.kill(), holder.wait()))
    (path / LOCK_NAME).write_text(json.dumps({
        "token": "f" * 32, "host": socket.gethostname(), "pid": holder.pid, "boot": _process_start(holder.pid),
        "started": "2030-01-01T00:00:00+00:00", "heartbeat": time.time(), "command": "ppp-dist infer"}))
    return {"pid": str(holder.pid), "host": socket.gethostname()}


class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # the row's stderr is ppp-dist's alone
        pass


def http_server(tmp, data, request):
    """Something that is not a dask scheduler on a port: an HTTP server."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _QuietHandler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    request.addfinalizer(server.shutdown)
    request.getfixturevalue("monkeypatch").setattr("ppp_dist.pipeline.cluster.CONNECT_TIMEOUT_S", 1.0)
    return {"port": str(server.server_address[1])}


def silent_socket(tmp, data, request):
    """A socket that accepts connections and never says anything."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(8)
    request.addfinalizer(listener.close)
    request.getfixturevalue("monkeypatch").setattr("ppp_dist.pipeline.cluster.CONNECT_TIMEOUT_S", 1.0)
    return {"port": str(listener.getsockname()[1])}


def _mount_tmpfs(path: Path, request, size: str) -> None:
    path.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)],
                      capture_output=True).returncode != 0:
        pytest.skip("needs a small file system: mounting a tmpfs needs root (CAP_SYS_ADMIN)")
    request.addfinalizer(lambda: subprocess.run(["umount", "-l", str(path)], capture_output=True))


def full_disk(tmp, data, request):
    """``full/`` is a 2 MiB file system that a filler file fills but for 16 KiB: room for the experiment's
    config, id, lock and log (a page each), not for the instances."""
    _mount_tmpfs(tmp / "full", request, "2m")
    stat = os.statvfs(tmp / "full")
    (tmp / "full" / "filler").write_bytes(b"\0" * (stat.f_bavail * stat.f_frsize - 16 * 1024))


def read_only_experiment(tmp, data, request):
    """``ro/exp``: an experiment with outputs and a run database, on a file system mounted read-only."""
    from _sweep_inputs import experiment

    from ppp_dist.config import DatabaseConfig
    from ppp_dist.experiment import experiment_id
    from ppp_dist.io.stores import open_graph_store

    _mount_tmpfs(tmp / "ro", request, "16m")
    path = experiment(tmp / "ro", data)
    store = open_graph_store(DatabaseConfig(), path)
    store.mark_done("vote", 0, {"voxels": 1}, seconds=1.0, worker="w", attempts=1)
    store.db.claim(experiment_id(path), str(path))
    store.close()
    subprocess.run(["mount", "-o", "remount,ro", str(tmp / "ro")], check=True)


# ------------------------------------------------------------------------------------------------ checks


def resumes_after_space_is_freed(tmp: Path, out: str, err: str) -> None:
    """After "no space left": free the space, run the same command (resume): the instances are right."""
    from _sweep_inputs import EXE

    from ppp_dist.io import volumes

    (tmp / "full" / "filler").unlink()
    (exp,) = (tmp / "full" / "runs").iterdir()
    again = subprocess.run([str(EXE), "label", "--exp", str(exp)], cwd=tmp, capture_output=True, text=True,
                           timeout=300)  # the saved config holds --input and every --set
    assert again.returncode == 0, again.stderr
    instances = np.asarray(volumes.open_array(f"{exp}/instances.zarr/instances")[...])
    assert instances.max() == 2 and "Traceback" not in again.stderr


def relabelled_two(tmp: Path, out: str, err: str) -> None:
    """postprocess of huge ids: ids 1 and 2 (in their order), nothing allocated by the ids' size."""
    from ppp_dist.io import volumes

    (exp,) = (tmp / "runs").iterdir()
    labels = np.asarray(volumes.open_array(f"{exp}/postprocessed.zarr/instances")[...])
    assert sorted(np.unique(labels).tolist()) == [0, 1, 2]


def nothing_written(tmp: Path, out: str, err: str) -> None:
    assert not [p for p in tmp.iterdir() if p.name != "ro"] and "nothing was written" in out


def read_only_status(tmp: Path, out: str, err: str) -> None:
    assert "vote" in out.split("blockwise stages (ledger):", 1)[1]

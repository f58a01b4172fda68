"""Ctrl-C during a blockwise run (issue #15): one line, no traceback of the dask workers, the lock released.

A terminal sends SIGINT to the whole foreground process group: to ppp-dist and to every worker process of its
local dask cluster. The workers used to print a KeyboardInterrupt traceback each (about 30 lines) before
ppp-dist said "interrupted"; they now ignore SIGINT, and ppp-dist stops them.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

EXE = Path(sys.executable).with_name("ppp-dist")


def _prediction(path: Path) -> Path:
    """The oracle prediction of 16 squares on a 96 x 96 image: 144 vote blocks of 8 x 8, a run of seconds."""
    import zarr

    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    gt = np.zeros((1, 1, 96, 96), np.uint16)
    for i in range(16):
        y, x = divmod(i, 4)
        gt[0, 0, 24 * y + 3:24 * y + 17, 24 * x + 3:24 * x + 17] = i + 1
    group = zarr.open_group(path, mode="w")
    group.create_array("patches", data=(patch_targets(gt, (1, 5, 5)) * 255).astype(np.uint8))
    group.create_array("numinst", data=(numinst_onehot(numinst_target(gt)) * 255).astype(np.uint8))
    return path


def test_ctrl_c_is_one_line_and_releases_the_lock(tmp_path):
    argv = [str(EXE), "label", "--root", "runs", "--input", str(_prediction(tmp_path / "pred.zarr")),
            "--set", "model.patch_shape=[1,5,5]", "--set", "vote.block_shape=[1,8,8]", "--set", "cluster.n_workers=2",
            "--set", "cluster.dashboard_address=:0"]
    env = {k: v for k, v in os.environ.items() if k != "PPP_DIST_DB_DSN"}
    run = subprocess.Popen(argv, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
                           start_new_session=True)
    try:
        for line in run.stdout:
            if line.startswith("dask dashboard:"):
                break
        time.sleep(2.0)  # the workers are busy with vote blocks
        os.killpg(run.pid, signal.SIGINT)  # what Ctrl-C in a terminal does: the whole process group
        out, err = run.communicate(timeout=120)
    finally:
        if run.poll() is None:
            os.killpg(run.pid, signal.SIGKILL)
    assert run.returncode == 1, err
    assert "Traceback" not in err and "KeyboardInterrupt" not in err, err
    assert err.strip().splitlines()[-1] == "ppp-dist: interrupted; run the same command again to resume"
    (exp,) = (tmp_path / "runs").iterdir()
    assert not (exp / "run.lock").exists()

"""Starting and joining clusters: local, unreachable scheduler, cuda fallback, batch-system job scripts,
and a stage on a real `dask scheduler` + 2 `dask worker` processes against SQLite and PostgreSQL."""

from __future__ import annotations

import logging
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from ppp_dist.config import ClusterConfig
from ppp_dist.errors import SchedulerError
from ppp_dist.geometry import BlockSpec, tile
from ppp_dist.io.graph_store import make_edges, make_fragments
from ppp_dist.io.stores import StoreFactory
from ppp_dist.pipeline.runner import run_stage
from ppp_dist.pipeline.worker import BlockOutput

DASK = Path(sys.executable).with_name("dask")
REPO = Path(__file__).resolve().parents[1]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_unreachable_scheduler_is_one_fast_sentence():
    port = _free_port()
    started = time.monotonic()
    with pytest.raises(SchedulerError, match=rf"cannot reach the dask scheduler at tcp://127.0.0.1:{port} within "
                                             r"1 s \(.*\); start it \(dask scheduler\) or fix \[cluster\]"):
        from ppp_dist.pipeline.cluster import start_cluster

        start_cluster(ClusterConfig(kind="scheduler", scheduler_address=f"tcp://127.0.0.1:{port}"),
                      connect_timeout=1)
    assert time.monotonic() - started < 10


def test_cuda_without_dask_cuda_falls_back_to_local(caplog):
    from ppp_dist.pipeline.cluster import close_cluster, start_cluster

    with caplog.at_level(logging.INFO, logger="ppp_dist.pipeline.cluster"):
        client = start_cluster(ClusterConfig(kind="cuda", n_workers=1, dashboard_address=":0"))
    try:
        assert len(client.scheduler_info()["workers"]) == 1
        assert client.submit(sum, [1, 2]).result() == 3
    finally:
        close_cluster(client)
    messages = [r.getMessage() for r in caplog.records]
    assert any("dask-cuda is not installed" in m and "local CPU cluster instead" in m for m in messages) or \
        any("no usable GPU" in m for m in messages)
    (link,) = [m.split(": ", 1)[1] for m in messages if m.startswith("dask dashboard: http")]
    # the dashboard listens on every interface (":0"): the link names this machine, not 127.0.0.1
    try:
        socket.getaddrinfo(socket.gethostname(), None)
        assert urlsplit(link).hostname == socket.gethostname(), link
    except OSError:
        assert urlsplit(link).hostname == "127.0.0.1", link


@pytest.mark.parametrize("link, address, expected", [
    ("http://127.0.0.1:8787/status", ":8787", "http://node042:8787/status"),  # local cluster on a node
    ("http://127.0.0.1:41234/status", "0.0.0.0:0", "http://node042:41234/status"),
    ("http://localhost:8787/status", ":8787", "http://node042:8787/status"),
    ("http://127.0.0.1:8787/status", "127.0.0.1:8787", "http://127.0.0.1:8787/status"),  # bound to loopback
    ("http://127.0.0.1:8787/status", "10.1.2.3:8787", "http://10.1.2.3:8787/status"),  # bound to one address
    ("http://10.1.2.3:8787/status", ":8787", "http://10.1.2.3:8787/status"),  # scheduler on ib0: reachable
    ("http://127.0.0.1:8787/status", "[::1]:8787", "http://[::1]:8787/status"),
    ("", ":8787", ""),
])
def test_dashboard_link_names_the_host_other_machines_reach(link, address, expected):
    from ppp_dist.pipeline.cluster import reachable_link

    assert reachable_link(link, address, hostname="node042") == expected


@pytest.mark.parametrize("kind, expected", [
    ("slurm", ["#SBATCH -p gpu-long", "#SBATCH -A lab42", "#SBATCH -t 02:30:00", "#SBATCH --mem=64G",
               "#SBATCH --gres=gpu:2", "#SBATCH --constraint=a100", "--nworkers 2", "--resources GPU=1"]),
    ("lsf", ["#BSUB -q gpu-long", '#BSUB -P "lab42"', "#BSUB -M 68719477", "#BSUB -W 02:30", "#BSUB -n 8",
             '#BSUB -gpu "num=2"',
             "#BSUB --constraint=a100", "--nworkers 2"]),
    ("pbs", ["#PBS -q gpu-long", "#PBS -A lab42", "#PBS -l walltime=02:30:00", "ngpus=2",
             "#PBS --constraint=a100", "--nworkers 2"]),
])
def test_batch_job_scripts_carry_the_directives(kind, expected):
    from ppp_dist.pipeline.cluster import make_jobqueue_cluster

    config = ClusterConfig(kind=kind, queue="gpu-long", account="lab42", walltime="02:30:00", cores=8,
                           memory="64GiB", gpus_per_job=2, job_extra_directives=("--constraint=a100",),
                           dashboard_address=":0")
    cluster = make_jobqueue_cluster(config)  # builds the job script, submits nothing
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in expected:
        assert line in script, f"{line!r} missing from\n{script}"


def test_interface_puts_scheduler_and_workers_on_it():
    from ppp_dist.config import load_config
    from ppp_dist.errors import ConfigError
    from ppp_dist.pipeline.cluster import make_jobqueue_cluster

    cluster = make_jobqueue_cluster(ClusterConfig(kind="slurm", interface="lo", dashboard_address=":0"))
    try:
        assert "--interface lo" in cluster.job_script()
        assert cluster.scheduler_address.startswith("tcp://127.0.0.1:")
    finally:
        cluster.close()
    with pytest.raises(ConfigError, match=r"\[cluster\] interface must be a network interface name"):
        load_config([], ['cluster.interface="lo; touch /tmp/x"'])


def test_cpu_batch_jobs_run_one_single_threaded_worker_per_core():
    from ppp_dist.pipeline.cluster import jobqueue_kwargs

    kwargs = jobqueue_kwargs(ClusterConfig(kind="slurm", cores=16, threads_per_worker=2, memory="32GiB"))
    assert (kwargs["processes"], kwargs["cores"], kwargs["memory"], kwargs["worker_extra_args"]) == \
        (8, 16, "32GiB", [])
    with pytest.raises(SchedulerError, match="not a batch system"):
        from ppp_dist.pipeline.cluster import make_jobqueue_cluster
        make_jobqueue_cluster(ClusterConfig(kind="local"))


# ---------------------------------------------------------------------------------------------------------
# a real scheduler and two worker processes


def small_stage(block: BlockSpec) -> BlockOutput:
    """Fragments 10b+1, 10b+2 joined (0.9); blocks in rows of 4 chained alternately by 0.9 and 0.4."""
    b = block.block_id
    u, v, w = [10 * b + 1], [10 * b + 2], [0.9]
    if b % 4 != 3:
        u, v, w = u + [10 * b + 2], v + [10 * (b + 1) + 1], w + [0.9 if b % 2 == 0 else 0.4]
    return BlockOutput(make_fragments([10 * b + 1, 10 * b + 2]), make_edges(u, v, w), {"pid": os.getpid()})


@pytest.fixture(scope="module")
def dask_cluster():
    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    # workers import the process function from this module: the code must be on every worker's path
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(REPO / "tests")])}
    procs = [subprocess.Popen([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port),
                               "--no-dashboard"], cwd=REPO, env=env, start_new_session=True,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    try:
        for _ in range(2):
            procs.append(subprocess.Popen([str(DASK), "worker", address, "--nthreads", "1", "--nworkers", "1",
                                           "--host", "127.0.0.1", "--no-dashboard", "--memory-limit", "2GiB"],
                                          cwd=REPO, env=env, start_new_session=True, stdout=subprocess.DEVNULL,
                                          stderr=subprocess.DEVNULL))
        yield address
    finally:
        for p in procs[::-1]:
            if p.poll() is None:
                os.killpg(p.pid, signal.SIGTERM)
        for p in procs[::-1]:
            try:
                p.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(p.pid, signal.SIGKILL)
                p.wait(timeout=15)


def test_stage_on_a_real_scheduler_and_two_workers(dask_cluster, database_config, tmp_path):
    from ppp_dist.pipeline.agglomerate import agglomerate, agglomerate_hierarchical
    from ppp_dist.pipeline.cluster import close_cluster, start_cluster

    client = start_cluster(ClusterConfig(kind="local"), scheduler_address=dask_cluster, connect_timeout=30)
    try:
        client.wait_for_workers(2, timeout=60)
        factory = StoreFactory(database_config, str(tmp_path))
        blocks = tile((1, 20, 80), (1, 10, 10))  # 16 blocks
        summary = run_stage(client, "vote", blocks, small_stage, factory, progress=False)
        assert summary.ok and summary.done == 16
        with factory() as store:
            pids = {r.counts["pid"] for r in store.ledger_rows("vote")}
            assert len(pids) == 2  # both worker processes ran blocks
            assert store.num_fragments() == 32 and store.num_edges() == 16 + 12
            result = agglomerate(store, edge_threshold=0.5)
            assert result.segments == 8  # blocks {0, 1}, {2, 3}, ... each one segment
            frag, seg = store.read_lut()
            assert dict(zip(frag.tolist(), seg.tolist()))[32] == 21 and seg.max() == 141
            tree = agglomerate_hierarchical(store, factory, edge_threshold=0.5, blocks_per_leaf=3, fan_in=2,
                                            client=client)  # leaves and merges run on the two workers
            assert tree.tasks == 6 + 3 + 2 + 1 and tree.segments == 8
            assert [a.tolist() for a in store.read_lut()] == [frag.tolist(), seg.tolist()]
    finally:
        close_cluster(client)


def test_label_pipeline_on_a_real_scheduler_and_two_workers(dask_cluster, database_config, tmp_path, capsys):
    """`ppp-dist label --scheduler ADDRESS`: vote, agglomerate and paint on separately started processes,
    with the graph in SQLite or PostgreSQL; the result equals the one-process assembly byte for byte."""
    import numpy as np

    from ppp_dist.cli import main
    from ppp_dist.data import crossing_tubes_3d
    from ppp_dist.io import volumes
    from ppp_dist.ops.patches import numinst_onehot, numinst_target, patch_targets

    gt = crossing_tubes_3d((24, 30, 28), n_tubes=2, seed=4).instances
    store = tmp_path / "oracle.zarr"
    for name, data in (("patches", patch_targets(gt, (5, 5, 5)) * np.uint8(255)),
                       ("numinst", (numinst_onehot(numinst_target(gt)) * 255).astype(np.uint8))):
        volumes.prepare_array(f"{store}/{name}", shape=data.shape, chunks=(data.shape[0], 12, 10, 14),
                              dtype="uint8")[...] = data
    database = ["--set", f"database.backend={database_config.backend}",
                "--set", f'database.dsn="{database_config.dsn}"', "--set", f'database.path="{database_config.path}"']
    common = ["label", "--input", str(store), "--set", "model.patch_shape=[5, 5, 5]",
              "--set", "vote.block_shape=[12, 10, 14]"]
    assert main([*common, "--root", str(tmp_path / "cluster"), "--scheduler", dask_cluster, *database]) == 0
    out = capsys.readouterr().out
    assert "vote: 12 blocks | done 12 | failed 0" in out and "paint: 12 blocks" in out
    assert main([*common, "--root", str(tmp_path / "one"), "--set", "vote.blockwise=false"]) == 0
    (cluster,), (one,) = (tmp_path / "cluster").iterdir(), (tmp_path / "one").iterdir()
    a = np.asarray(volumes.open_array(f"{cluster}/instances.zarr/instances")[...])
    b = np.asarray(volumes.open_array(f"{one}/instances.zarr/instances")[...])
    assert a.max() >= 2 and a.tobytes() == b.tobytes()

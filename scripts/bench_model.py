"""The 1 TB model of scripts/bench_suite.py: time of a 10^12-voxel volume on N workers from measured rates.

``section_model(results, io_gbps)`` reads the suite's network, pipeline, graph DB rows; the formula is
``extrapolate_time``: per stage, the voxels it computes (with halos, or the network's ratio) / rate /
workers, plus the terms that do not spread over workers -- the database's writes and the agglomeration.
"""

from __future__ import annotations

from typing import Any

TB_VOXELS = 1e12  # "1 TB": 10^12 voxels (1 byte of single-channel uint8 raw per voxel)


def halo_factor(block: int, halo: int, ndim: int = 3) -> float:
    """((b + 2 halo) / b)^ndim: read voxels per core voxel of an interior block."""
    return ((block + 2 * halo) / block) ** ndim


def extrapolate_time(voxels: float, workers: int, *, vote_read_rate: float, paint_read_rate: float,
                     vote_halo: int, paint_halo: int, block: int, rows_per_voxel: float, clusters_per_voxel: float,
                     agglomerate_s_per_cluster: float, db_write_rows_per_s: float,
                     network_voxels_per_s: float | None = None, network_ratio: float = 1.0,
                     network_workers: int | None = None, io_bytes_per_voxel: float = 0.0,
                     io_bytes_per_s: float | None = None) -> dict[str, Any]:
    """Hours of each stage for ``voxels`` on ``workers`` worker processes (1 thread each).

    Model (all rates measured by this suite):

    * predict: the network computes ``network_ratio`` output voxels per voxel (1 for the stored prediction)
      at ``network_voxels_per_s`` per network worker (``network_workers``, default ``workers``); 0 without a rate;
    * vote and paint are compute-bound per block and parallel over blocks: a core voxel costs
      ``halo_factor(block, halo)`` read voxels, and a worker processes ``*_read_rate`` read voxels/s;
    * the graph DB is one server: the vote stage cannot finish before its rows are written,
      ``T_db = voxels * rows_per_voxel / db_write_rows_per_s``; vote = max(compute + I/O, T_db);
    * agglomeration: measured seconds per cluster, counted as if none of it spread over workers (the root of
      the stitch, the database's numbering and the phase-2 tasks; its leaves do spread): an upper bound;
    * I/O: ``voxels * io_bytes_per_voxel * halo_factor / io_bytes_per_s`` added to vote (ignored if None).
    """
    fv, fp = halo_factor(block, vote_halo), halo_factor(block, paint_halo)
    predict = 0.0
    if network_voxels_per_s:
        predict = voxels * network_ratio / ((network_workers or workers) * network_voxels_per_s)
    vote_compute = voxels * fv / (workers * vote_read_rate)
    rows = voxels * rows_per_voxel
    db = rows / db_write_rows_per_s
    io = 0.0 if not io_bytes_per_s else voxels * io_bytes_per_voxel * fv / io_bytes_per_s
    vote = max(vote_compute + io, db)
    paint = voxels * fp / (workers * paint_read_rate)
    agg = voxels * clusters_per_voxel * agglomerate_s_per_cluster
    terms = {"predict": predict, "vote": vote, "agglomerate": agg, "paint": paint}
    limiting = max(terms, key=lambda k: terms[k])
    if limiting == "vote" and db > vote_compute + io:
        limiting = "vote (database writes)"
    return {"workers": workers, "predict_h": predict / 3600, "vote_compute_h": vote_compute / 3600,
            "db_write_h": db / 3600, "io_h": io / 3600, "vote_h": vote / 3600, "agglomerate_h": agg / 3600,
            "paint_h": paint / 3600, "total_h": sum(terms.values()) / 3600, "db_rows": rows,
            "limiting": limiting}


def model_parameters(results: dict[str, Any]) -> dict[str, Any] | None:
    """The model's inputs from this run.

    Per-worker rates (read voxels per worker-second, from the ledger) come from the largest measured 3D run
    with 1 worker process (on a shared 2-CPU machine the 2-worker runs' block times include waiting for a
    CPU; on a cluster every worker has its own cores); densities (rows, clusters, storage bytes per voxel) and
    the agglomeration time per cluster from the largest measured 3D run (interior blocks dominate there)."""
    runs = [r for r in results.get("pipeline", {}).get("runs", [])
            if not r.get("extrapolated") and not r.get("error") and r.get("kind") == "tubes"
            and "vote" in r.get("stages", {}) and r["stages"]["vote"].get("worker_s")]
    if not runs:
        return None
    big = max(runs, key=lambda r: (r["voxels"], r["mode"] == "fused", -r["workers"]))
    ones = [r for r in runs if r["workers"] == 1] or runs
    rate = max(ones, key=lambda r: (r["voxels"], r["mode"] == "fused"))
    vote, paint = rate["stages"]["vote"], rate["stages"]["paint"]
    clusters = max(big["db_rows"].get("clusters", 0), 1)
    params: dict[str, Any] = {
        "rates_from": f"{rate['name']}, {rate['workers']} worker(s)",
        "density_from": f"{big['name']}, {big['workers']} worker(s)", "block": big["block"][-1],
        "vote_halo": vote["halo"][-1], "paint_halo": paint["halo"][-1],
        "vote_read_rate": vote["read_voxels"] / vote["worker_s"],
        "paint_read_rate": paint["read_voxels"] / max(paint["worker_s"], 1e-9),
        "rows_per_voxel": big["db_rows"]["rows"] / big["voxels"], "clusters_per_voxel": clusters / big["voxels"],
        "agglomerate_s_per_cluster": big["stages"].get("agglomerate", {}).get("seconds", 0.0) / clusters,
        "storage_bytes_per_voxel": big["bytes"].get("graph_storage", big["bytes"]["graph_db"]) / big["voxels"],
    }
    db = results.get("graph_db", {}).get("backends", {})
    backend = "postgres" if "postgres" in db else "sqlite"
    params["db_backend"] = backend
    params["db_write_rows_per_s"] = next((r["rows_per_s"] for r in db.get(backend, [])
                                          if "processes at once" in r["operation"]), None) or 1e5
    net = results.get("network", {})
    cpu = [r for r in net.get("rows", []) if not r.get("amp")]
    if cpu:
        best = min(cpu, key=lambda r: r["threads"])
        params["network_voxels_per_s"] = best["voxels_per_s"]
        params["network_device"] = f"{net.get('device', 'cpu')}, {best['threads']} thread(s)"
        params["network"] = f"{net.get('config', '')}: input {net.get('input')} -> output {net.get('output')}"
    return params


def needed_network_rate(params: dict[str, Any], workers: int, hours: float = 24.0) -> float | None:
    """The network rate per worker (output voxels/s) at which the whole run fits ``hours`` on ``workers``."""
    kw = _kw(params)
    rest = extrapolate_time(TB_VOXELS, workers, **kw)["total_h"]
    left = hours - rest
    if left <= 0:
        return None
    return TB_VOXELS * params.get("network_ratio", 1.0) / (workers * left * 3600)


def _kw(params: dict[str, Any]) -> dict[str, Any]:
    keys = ("vote_read_rate", "paint_read_rate", "vote_halo", "paint_halo", "block", "rows_per_voxel",
            "clusters_per_voxel", "agglomerate_s_per_cluster", "db_write_rows_per_s")
    return {k: params[k] for k in keys}


def section_model(results: dict[str, Any], io_gbps: float | None) -> dict[str, Any]:
    params = model_parameters(results)
    if params is None:
        return {"error": "no measured 3D pipeline run with ledger times"}
    params["network_ratio"] = 1.0  # the stored prediction: every voxel once (docs/pipeline.md, "The network once")
    io = {"io_bytes_per_voxel": 0.0, "io_bytes_per_s": None}
    if io_gbps:
        io = {"io_bytes_per_voxel": 2.0, "io_bytes_per_s": io_gbps * 1e9}  # labels/raw ~2 B/voxel read
    net = {"network_voxels_per_s": params.get("network_voxels_per_s"), "network_ratio": params["network_ratio"]}
    rows = [extrapolate_time(TB_VOXELS, n, **_kw(params), **net, **io) for n in (1, 10, 100)]
    without = [extrapolate_time(TB_VOXELS, n, **_kw(params), **io) for n in (1, 10, 100)]
    for r, w in zip(rows, without):
        r["storage_tb"] = TB_VOXELS * params["storage_bytes_per_voxel"] / 1e12
        r["without_network_h"] = w["total_h"]
        r["limiting_without_network"] = w["limiting"]
        r["network_rate_for_24h"] = needed_network_rate(params, r["workers"])
    blocks = {b: {"vote": halo_factor(b, params["vote_halo"]), "paint": halo_factor(b, params["paint_halo"])}
              for b in (64, 128, 256)}
    return {"voxels": TB_VOXELS, "parameters": params, "io": io, "rows": rows, "halo_factors": blocks,
            "network_ratios": network_ratios()}


def network_ratios(side: int = 10_000) -> dict[str, Any]:
    """Network output voxels per voxel of the default config's network on a ``side``^3 volume (1 TB): the stored
    prediction, and the fused mode for vote blocks of 64, 128 and 256 (``ppp_dist.tasks.plan.network_ratio``)."""
    from ppp_dist.config import config_from_table
    from ppp_dist.learning.predict import tile_geometry
    from ppp_dist.pipeline.settings import assembly_settings, vote_halo
    from ppp_dist.tasks.plan import network_ratio

    config = config_from_table({})
    tile = tuple(int(t) for t in tile_geometry(config.model).output_shape)
    halo = vote_halo(assembly_settings(config))
    volume = (side,) * 3
    return {"tile": list(tile), "vote_halo": list(halo), "stored": network_ratio(volume, tile),
            "fused": {b: network_ratio(volume, tile, fused=True, block_shape=(b,) * 3, halo=halo)
                      for b in (64, 128, 256)}}

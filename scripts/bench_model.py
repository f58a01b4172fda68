"""The 1 TB model of scripts/bench_suite.py: time of a 10^12-voxel volume on N workers from measured rates.

``section_model(results, io_gbps)`` reads the suite's pipeline, graph DB and agglomeration rows; the
formula is ``extrapolate_time`` (per stage: read voxels with halos / rate / workers, plus the DB writes and
the driver's agglomeration, which do not spread over workers).
"""

from __future__ import annotations

from typing import Any

TB_VOXELS = 1e12  # "1 TB": 10^12 voxels (1 byte of single-channel uint8 raw per voxel)


def halo_factor(block: int, halo: int, ndim: int = 3) -> float:
    """((b + 2 halo) / b)^ndim: read voxels per core voxel of an interior block."""
    return ((block + 2 * halo) / block) ** ndim


def extrapolate_time(voxels: float, workers: int, *, vote_read_rate: float, paint_read_rate: float,
                     vote_halo: int, paint_halo: int, block: int, edges_per_voxel: float,
                     fragments_per_voxel: float, agglomerate_s_per_edge: float, db_write_rows_per_s: float,
                     io_bytes_per_voxel: float = 0.0, io_bytes_per_s: float | None = None) -> dict[str, float]:
    """Hours of each stage for ``voxels`` on ``workers`` worker processes (1 thread each).

    Model (all rates measured by this suite):

    * vote and paint are compute-bound per block and parallel over blocks: a core voxel costs
      ``halo_factor(block, halo)`` read voxels, and a worker processes ``*_read_rate`` read voxels/s, so
      ``T = voxels * halo_factor / (workers * read_rate)``;
    * the graph DB is one server: the vote stage cannot finish before its rows are written,
      ``T_db = voxels * (edges + fragments per voxel) / db_write_rows_per_s``; vote = max(compute, T_db);
    * agglomeration runs on the driver, O(E): ``T = voxels * edges_per_voxel * agglomerate_s_per_edge``
      (streaming the edges from the DB + union-find, as measured in the pipeline);
    * I/O: ``voxels * io_bytes_per_voxel * halo_factor / io_bytes_per_s`` added to vote (ignored if None).
    """
    fv, fp = halo_factor(block, vote_halo), halo_factor(block, paint_halo)
    vote_compute = voxels * fv / (workers * vote_read_rate)
    rows = voxels * (edges_per_voxel + fragments_per_voxel)
    db = rows / db_write_rows_per_s
    io = 0.0 if not io_bytes_per_s else voxels * io_bytes_per_voxel * fv / io_bytes_per_s
    vote = max(vote_compute + io, db)
    paint = voxels * fp / (workers * paint_read_rate)
    agg = voxels * edges_per_voxel * agglomerate_s_per_edge
    return {"workers": workers, "vote_compute_h": vote_compute / 3600, "db_write_h": db / 3600, "io_h": io / 3600,
            "vote_h": vote / 3600, "agglomerate_h": agg / 3600, "paint_h": paint / 3600,
            "total_h": (vote + agg + paint) / 3600, "db_rows": rows,
            "driver_union_find_gib": voxels * fragments_per_voxel * 25 / 2 ** 30}


def model_parameters(results: dict[str, Any]) -> dict[str, Any] | None:
    """The model's inputs from this run.

    Per-worker rates (read voxels per worker-second, from the ledger) come from the largest measured 3D run
    with 1 worker process (on a shared 2-CPU machine the 2-worker runs' block times include waiting for a
    CPU; on a cluster every worker has its own cores); densities (edges, fragments, DB bytes per voxel) and
    the agglomeration time per edge from the largest measured 3D run (interior blocks dominate there)."""
    runs = [r for r in results.get("pipeline", {}).get("runs", [])
            if not r.get("extrapolated") and not r.get("error") and r.get("kind") == "tubes"
            and "vote" in r.get("stages", {}) and r["stages"]["vote"].get("worker_s")]
    if not runs:
        return None
    big = max(runs, key=lambda r: (r["voxels"], r["mode"] == "fused", -r["workers"]))
    ones = [r for r in runs if r["workers"] == 1] or runs
    rate = max(ones, key=lambda r: (r["voxels"], r["mode"] == "fused"))
    vote, paint = rate["stages"]["vote"], rate["stages"]["paint"]
    edges = big["db_rows"]["edges"]
    params: dict[str, Any] = {
        "rates_from": f"{rate['name']}, {rate['workers']} worker(s)",
        "density_from": f"{big['name']}, {big['workers']} worker(s)", "block": big["block"][-1],
        "vote_halo": vote["halo"][-1], "paint_halo": paint["halo"][-1],
        "vote_read_rate": vote["read_voxels"] / vote["worker_s"],
        "paint_read_rate": paint["read_voxels"] / max(paint["worker_s"], 1e-9),
        "edges_per_voxel": edges / big["voxels"], "fragments_per_voxel": big["db_rows"]["fragments"] / big["voxels"],
        "agglomerate_s_per_edge": big["stages"].get("agglomerate", {}).get("seconds", 0.0) / max(edges, 1),
        "db_bytes_per_voxel": big["bytes"]["graph_db"] / big["voxels"],
    }
    db = results.get("graph_db", {}).get("backends", {})
    backend = "postgres" if "postgres" in db else "sqlite"
    params["db_backend"] = backend
    params["db_write_rows_per_s"] = next((r["rows_per_s"] for r in db.get(backend, [])
                                          if "processes at once" in r["operation"]), None) or 1e5
    uf = [r for r in results.get("agglomeration", {}).get("rows", [])
          if r["method"] == "union_find" and not r.get("extrapolated") and r.get("seconds")]
    if uf:
        top = max(uf, key=lambda r: r["edges"])
        params["union_find_edges_per_s"] = top["edges"] / top["seconds"]
        params["union_find_at_edges"] = top["edges"]
    return params


def section_model(results: dict[str, Any], io_gbps: float | None) -> dict[str, Any]:
    params = model_parameters(results)
    if params is None:
        return {"error": "no measured 3D pipeline run with ledger times"}
    keys = ("vote_read_rate", "paint_read_rate", "vote_halo", "paint_halo", "block", "edges_per_voxel",
            "fragments_per_voxel", "agglomerate_s_per_edge", "db_write_rows_per_s")
    kw = {k: params[k] for k in keys}
    io = {"io_bytes_per_voxel": 0.0, "io_bytes_per_s": None}
    if io_gbps:
        io = {"io_bytes_per_voxel": 2.0, "io_bytes_per_s": io_gbps * 1e9}  # labels/raw ~2 B/voxel read
    rows = [extrapolate_time(TB_VOXELS, n, **kw, **io) for n in (1, 10, 100)]
    for r in rows:
        r["db_tb"] = TB_VOXELS * params["db_bytes_per_voxel"] / 1e12
    blocks = {b: {"vote": halo_factor(b, params["vote_halo"]), "paint": halo_factor(b, params["paint_halo"])}
              for b in (64, 128, 256)}
    return {"voxels": TB_VOXELS, "parameters": params, "io": io, "rows": rows, "halo_factors": blocks}

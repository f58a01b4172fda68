"""What the pipeline stores besides the labels, per dataset: the contracted graph against the full patch graph.

For each dataset the pipeline runs twice on the same oracle patches (computed per block from the ground truth,
the fused oracle: nothing else is stored), in one process, side by side:

* **full graph** -- ``partition = "mutex_watershed"``, which stores every selected patch and every patch pair
  with votes: exactly the rows the pipeline stored for every partition before the contraction;
* **contracted** -- ``partition = "connected_components"`` (the default): clusters, boundary map, links.

Reported: database rows per 10^6 voxels, and bytes per voxel on disk of everything the pipeline stores besides
the labels: the database file(s) and what vote leaves for paint (``pipeline/vote.zarr``, ``vote_rows``). The
contracted run's labels are checked against the whole-volume ``ops.assemble`` where the volume fits in memory.

A second table measures the stored prediction: patch bytes per voxel with and without zeroed background
(``[prediction] zero_background``), for oracle and soft (0.2/0.8 +- 0.1 noise) patches.

    .venv/bin/python scripts/bench_graph.py [--quick] [--out runs/bench_graph.json]
"""

from __future__ import annotations

import argparse
import json
import math
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_common import disk_bytes  # noqa: E402

# name: (ground truth, volume, vote block, patch shape); targets of the terabyte-graph issue (rows per 10^6 voxels)
DATASETS = {
    "tubes 128³": ("tubes", (128, 128, 128), (64, 64, 64), (5, 5, 5), 2_500),
    "FlyLight 50³": ("flylight", (50, 50, 50), (25, 25, 25), (7, 7, 7), 120_000),
    "nuclei 2D 1024²": ("nuclei2d", (1, 1024, 1024), (1, 256, 256), (1, 11, 11), 5_000),
}
QUICK = {
    "tubes 64³": ("tubes", (64, 64, 64), (32, 32, 32), (5, 5, 5), None),
    "FlyLight 50³": ("flylight", (50, 50, 50), (25, 25, 25), (7, 7, 7), 120_000),
    "nuclei 2D 256²": ("nuclei2d", (1, 256, 256), (1, 128, 128), (1, 11, 11), None),
}


def write_labels(path: Path, kind: str, shape: tuple[int, ...], chunk: tuple[int, ...]) -> str:
    """The ground truth as a (K, Z, Y, X) label array."""
    from ppp_dist.io.volumes import prepare_array

    if kind == "flylight":
        from ppp_dist.data import load_flylight

        inst = load_flylight().instances
    else:
        import bench_pipeline as bp

        bp.write_labels_blockwise(path, shape, chunk, seed=0, kind=kind)
        return str(path)
    arr = prepare_array(str(path), shape=inst.shape, chunks=(1,) + tuple(min(c, s) for c, s in zip(chunk, shape)),
                        dtype="uint16", axes="czyx", kind="labels")
    arr[...] = inst.astype(np.uint16)
    return str(path)


def storage(exp: Path) -> dict[str, Any]:
    from ppp_dist.config import DatabaseConfig
    from ppp_dist.io.stores import open_graph_store

    store = open_graph_store(DatabaseConfig(path=str(exp / "graph.sqlite")))
    try:
        tables = store.table_rows()
    finally:
        store.close()
    rows = sum(tables[t] for t in ("clusters", "patch_map", "links", "fragments", "edges"))
    db = sum(disk_bytes(p) for p in exp.glob("graph.sqlite*"))
    paint = disk_bytes(exp / "pipeline" / "vote.zarr") + disk_bytes(exp / "pipeline" / "vote_rows")
    return {"tables": tables, "rows": rows, "db_bytes": db, "paint_bytes": paint, "bytes": db + paint}


def run_dataset(name: str, spec: tuple, work: Path) -> dict[str, Any]:
    from ppp_dist.config import config_from_table
    from ppp_dist.io.volumes import open_array
    from ppp_dist.pipeline.infer import run_pipeline

    kind, shape, block, patch, target = spec
    labels = write_labels(work / "gt.zarr" / "gt", kind, shape, block)
    nvox = math.prod(shape)
    out: dict[str, Any] = {"name": name, "shape": list(shape), "block": list(block), "patch": list(patch),
                           "target_rows_per_1e6": target}
    for partition, key in (("mutex_watershed", "full"), ("connected_components", "contracted")):
        exp = work / key
        cfg = config_from_table({"model": {"patch_shape": list(patch)},
                                 "vote": {"block_shape": list(block), "partition": partition}})
        t0 = time.perf_counter()
        res = run_pipeline(cfg, exp, client=None, labels=labels)
        s = storage(exp)
        out[key] = {**s, "rows_per_1e6": s["rows"] * 1e6 / nvox, "bytes_per_voxel": s["bytes"] / nvox,
                    "seconds": round(time.perf_counter() - t0, 2), "instances": res.instances,
                    "agglomerate_s": res.stages["agglomerate"]["seconds"]}
        if key == "contracted":
            out["labels"] = np.asarray(open_array(res.output)[...])
    out["reduction"] = out["full"]["rows"] / max(out["contracted"]["rows"], 1)
    return out


def check_whole(result: dict[str, Any], work: Path) -> bool:
    """The contracted run's labels equal ops.assemble on the whole volume's oracle patches."""
    from ppp_dist.config import config_from_table
    from ppp_dist.geometry import Box
    from ppp_dist.ops.assemble import assemble
    from ppp_dist.pipeline.settings import assembly_settings
    from ppp_dist.pipeline.sources import OraclePatches

    shape = tuple(result["shape"])
    settings = assembly_settings(config_from_table({"model": {"patch_shape": result["patch"]}}))
    p, ni = OraclePatches(str(work / "gt.zarr" / "gt")).read(Box.from_shape(shape), settings)
    onehot = np.stack([(ni == k).astype(np.uint8) * 255 for k in range(3)])
    whole = assemble(p, onehot, settings)
    return bool(np.array_equal(whole, result["labels"]))


def prediction_bytes(size: int, patch: int, work: Path) -> list[dict[str, Any]]:
    """Stored patch bytes per voxel of a tubes volume: oracle and soft, background zeroed or not."""
    import bench_pipeline as bp

    rows = []
    shape, p = (size,) * 3, (patch,) * 3
    for noise in (0.0, 0.1):
        for zero in (False, True):
            g = work / f"pred_{noise}_{zero}.zarr"
            bp.write_oracle_blockwise(g, shape, p, (min(64, size),) * 3, seed=0, kind="tubes", noise=noise,
                                      zero_background=zero)
            rows.append({"patches": "oracle 0/1" if noise == 0 else "soft 0.2/0.8 ± 0.1",
                         "zero_background": zero, "volume": list(shape),
                         "bytes_per_voxel": disk_bytes(g / "patches") / size ** 3, "nominal": patch ** 3})
            shutil.rmtree(g, ignore_errors=True)
    return rows


def table(results: list[dict[str, Any]], pred: list[dict[str, Any]]) -> str:
    lines = ["| dataset | block | patch | full graph rows / 10⁶ vox | contracted rows / 10⁶ vox | ÷ | target | "
             "full B/voxel | contracted B/voxel | same labels as ops.assemble |",
             "|---|---|---|---:|---:|---:|---:|---:|---:|---|"]
    for r in results:
        f, c = r["full"], r["contracted"]
        target = f"≤ {r['target_rows_per_1e6']:,}" if r["target_rows_per_1e6"] else "–"
        lines.append(f"| {r['name']} | {'×'.join(map(str, r['block']))} | {'×'.join(map(str, r['patch']))} | "
                     f"{f['rows_per_1e6']:,.0f} | {c['rows_per_1e6']:,.0f} | {r['reduction']:.0f} | {target} | "
                     f"{f['bytes_per_voxel']:.3f} | {c['bytes_per_voxel']:.3f} | {r.get('identical', '–')} |")
    lines += ["", "| stored patches | zero background | volume | bytes / voxel | nominal |", "|---|---|---|---:|---:|"]
    for r in pred:
        lines.append(f"| {r['patches']} | {r['zero_background']} | {'×'.join(map(str, r['volume']))} | "
                     f"{r['bytes_per_voxel']:.3f} | {r['nominal']} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="smaller volumes (seconds, for the test suite)")
    ap.add_argument("--out", default="runs/bench_graph.json")
    args = ap.parse_args(argv)
    results = []
    for name, spec in (QUICK if args.quick else DATASETS).items():
        work = Path(tempfile.mkdtemp(prefix="bench_graph_"))
        try:
            r = run_dataset(name, spec, work)
            if math.prod(spec[1]) <= 2 ** 22:
                r["identical"] = check_whole(r, work)
            r.pop("labels")
            results.append(r)
            print(json.dumps({k: v for k, v in r.items() if k not in ("full", "contracted")}), flush=True)
        finally:
            shutil.rmtree(work, ignore_errors=True)
    work = Path(tempfile.mkdtemp(prefix="bench_graph_pred_"))
    try:
        pred = prediction_bytes(64 if args.quick else 128, 5, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    text = table(results, pred)
    print(text)
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps({"datasets": results, "prediction": pred, "table": text}, indent=1))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

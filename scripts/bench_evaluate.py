"""Benchmark the evaluate stage: blockwise overlap table on a 2-worker LocalCluster vs whole-array in memory.

Makes a synthetic label volume (one random box per 16^3 cell, ids unique; written chunk by chunk to zarr)
and a perturbed copy as prediction (boxes dropped, shifted, shrunk, split and merged), then times

* whole: read both arrays into memory, one ``overlap_table``, IoU metrics;
* blockwise: ``compute_overlap_table`` with one dask task per block on ``LocalCluster(n_workers,
  processes=True, threads_per_worker=1)``, IoU metrics; the tables must be identical.

    python scripts/bench_evaluate.py --size 512 --chunk 128 --workers 2 --out /tmp/bench_eval
"""

from __future__ import annotations

import argparse
import json
import time
from itertools import product
from pathlib import Path

import numpy as np
import zarr

from ppp_dist.ops.metrics_iou import iou_metrics
from ppp_dist.ops.overlap_table import overlap_table
from ppp_dist.tasks.evaluation import compute_overlap_table, read_labels

CELL = 16


def make_volume(out: Path, size: int, chunk: int, seed: int) -> tuple[str, str]:
    """Write gt and pred (Z, Y, X) uint32 arrays of side ``size`` to ``out/synthetic.zarr``."""
    group = zarr.open_group(str(out / "synthetic.zarr"), mode="w")
    shape, chunks = (size,) * 3, (chunk,) * 3
    gt_arr = group.create_array("gt", shape=shape, chunks=chunks, dtype=np.uint32)
    pred_arr = group.create_array("pred", shape=shape, chunks=chunks, dtype=np.uint32)
    cells = size // CELL
    n_cells = cells**3
    per = chunk // CELL
    for cz, cy, cx in product(range(size // chunk), repeat=3):
        gt = np.zeros(chunks, np.uint32)
        pred = np.zeros(chunks, np.uint32)
        for iz, iy, ix in product(range(per), repeat=3):
            z, y, x = cz * per + iz, cy * per + iy, cx * per + ix
            cell_id = (z * cells + y) * cells + x
            rng = np.random.default_rng([seed, cell_id])
            lo = rng.integers(1, 4, 3)
            hi = np.minimum(lo + rng.integers(6, 12, 3), CELL - 1)
            origin = np.array([iz, iy, ix]) * CELL
            a, b = origin + lo, origin + hi
            gt[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = cell_id + 1
            r = rng.random()
            if r < 0.05:
                continue                                   # missed instance
            if r < 0.15:
                a, b = a + [0, 0, 1], b + [0, 0, 1]        # shifted by one voxel
            elif r < 0.25:
                a, b = a + 1, b - 1                        # shrunk
            label = cell_id + 1
            if 0.25 <= r < 0.32:                           # split in two along x
                mid = (a[2] + b[2]) // 2
                pred[a[0]:b[0], a[1]:b[1], a[2]:mid] = label
                pred[a[0]:b[0], a[1]:b[1], mid:b[2]] = n_cells + label
                continue
            if 0.32 <= r < 0.4 and x > 0:                  # merged with the box of the previous cell
                label = cell_id                            # = id of cell (z, y, x - 1)
            pred[a[0]:b[0], a[1]:b[1], a[2]:b[2]] = label
        sl = tuple(slice(c * chunk, (c + 1) * chunk) for c in (cz, cy, cx))
        gt_arr[sl] = gt
        pred_arr[sl] = pred
    base = str(out / "synthetic.zarr")
    return f"{base}/gt", f"{base}/pred"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", type=int, default=512)
    parser.add_argument("--chunk", type=int, default=128)
    parser.add_argument("--block", type=int, default=None, help="block side (default: --chunk)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("/tmp/bench_evaluate"))
    parser.add_argument("--skip-whole", action="store_true", help="time only the blockwise run")
    args = parser.parse_args()
    block = (args.block or args.chunk,) * 3
    args.out.mkdir(parents=True, exist_ok=True)
    timings: dict[str, float | int | str | list[int]] = {"size": args.size, "chunk": args.chunk,
                                                         "block": list(block), "workers": args.workers}

    t0 = time.perf_counter()
    gt_spec, pred_spec = make_volume(args.out, args.size, args.chunk, args.seed)
    timings["make_volume_s"] = time.perf_counter() - t0

    whole_table = None
    if not args.skip_whole:
        t0 = time.perf_counter()
        gt, pred = read_labels(gt_spec), read_labels(pred_spec)
        timings["whole_read_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        whole_table = overlap_table(gt, pred)
        del gt, pred
        timings["whole_table_s"] = time.perf_counter() - t1
        t1 = time.perf_counter()
        whole = iou_metrics(whole_table)
        timings["metrics_s"] = time.perf_counter() - t1
        timings["whole_total_s"] = time.perf_counter() - t0
        timings["whole_avS"] = whole["avS"]

    from distributed import Client, LocalCluster

    t0 = time.perf_counter()
    with LocalCluster(n_workers=args.workers, processes=True, threads_per_worker=1,
                      dashboard_address=None) as cluster, Client(cluster) as client:
        timings["cluster_start_s"] = time.perf_counter() - t0
        t1 = time.perf_counter()
        table = compute_overlap_table(gt_spec, pred_spec, block_shape=block, client=client)
        timings["blockwise_table_s"] = time.perf_counter() - t1
    t1 = time.perf_counter()
    blockwise = iou_metrics(table)
    timings["blockwise_total_s"] = timings["blockwise_table_s"] + time.perf_counter() - t1
    timings["blockwise_avS"] = blockwise["avS"]
    timings["n_gt"], timings["n_pred"] = blockwise["n_gt"], blockwise["n_pred"]
    timings["table_rows"] = int(table.pair_count.size)
    if whole_table is not None:
        same = all(np.array_equal(getattr(table, f), getattr(whole_table, f))
                   for f in ("gt_ids", "gt_sizes", "pred_ids", "pred_sizes", "pair_gt", "pair_pred",
                             "pair_count"))
        timings["tables_identical"] = str(same)
    print(json.dumps(timings, indent=1))
    (args.out / "bench_evaluate.json").write_text(json.dumps(timings, indent=1) + "\n")


if __name__ == "__main__":
    main()

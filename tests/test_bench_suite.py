"""scripts/bench_suite.py: the smoke mode runs every section and writes results.json, results.md and plots.

No timing is asserted (the machine is shared): only that every section produced its numbers, and the 1 TB
model's formula on fixed inputs.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

SCRIPTS = Path(__file__).resolve().parents[1] / "scripts"


@pytest.fixture(scope="module")
def suite_run(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("bench_suite")
    proc = subprocess.run([sys.executable, str(SCRIPTS / "bench_suite.py"), "--smoke", "--out", str(out)],
                          capture_output=True, text=True, timeout=900, cwd=SCRIPTS.parent)
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = list(out.iterdir())
    assert len(runs) == 1, runs
    return runs[0]


def test_smoke_writes_every_section(suite_run):
    results = json.loads((suite_run / "results.json").read_text())
    for key in ("meta", "skipped", "assembly", "graph_db", "bytes", "agglomeration", "pipeline", "bytes_per_voxel",
                "model", "plots"):
        assert key in results, key
    for key in ("assembly", "graph_db", "bytes", "agglomeration", "pipeline", "model"):
        assert "error" not in results[key], (key, results[key].get("error"))
    assert results["meta"]["mode"] == "smoke" and results["meta"]["machine"]["cpu_count"] >= 1
    assert results["assembly"]["rows"] and results["assembly"]["table"].startswith("|")
    assert "sqlite" in results["graph_db"]["backends"]
    methods = {(r["method"], r["edges"]) for r in results["agglomeration"]["rows"]}
    assert {("union_find", 100_000), ("scipy", 100_000), ("networkx", 100_000)} <= methods
    runs = results["pipeline"]["runs"]
    measured = [r for r in runs if not r.get("extrapolated")]
    assert measured and all(r.get("ok") for r in measured), runs
    for r in measured:
        assert {"vote", "agglomerate", "paint"} <= set(r["stages"])
        assert r["worker_peak_mib"] > 0 and r["driver_peak_mib"] > 0
    assert measured[0]["whole"]["identical"] is True  # distributed == whole-volume ops.assemble, byte for byte
    assert any(r.get("extrapolated") for r in runs)  # the smoke plan forces one extrapolated size
    assert any(r["what"].startswith("original") and r["nominal"] == 686.0 for r in results["bytes_per_voxel"])
    assert [r["workers"] for r in results["model"]["rows"]] == [1, 10, 100]
    assert "pipeline.png" in results["plots"]


def test_smoke_writes_markdown_and_plots(suite_run):
    md = (suite_run / "results.md").read_text()
    for heading in ("## a.", "## b.", "## c.", "## d.", "## e.", "## f."):
        assert heading in md
    assert "| run | workers |" in md
    pngs = sorted(p.name for p in suite_run.glob("*.png"))
    assert "pipeline.png" in pngs and "agglomeration.png" in pngs
    assert all((suite_run / p).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" for p in pngs)


def test_model_formula():
    sys.path.insert(0, str(SCRIPTS))
    try:
        import bench_model
    finally:
        sys.path.remove(str(SCRIPTS))
    assert bench_model.halo_factor(64, 22) == pytest.approx((108 / 64) ** 3)
    kw = dict(vote_read_rate=1e6, paint_read_rate=1e7, vote_halo=22, paint_halo=2, block=64, rows_per_voxel=1e-3,
              clusters_per_voxel=1e-4, agglomerate_s_per_cluster=1e-5, db_write_rows_per_s=1e5)
    one, ten = (bench_model.extrapolate_time(1e12, n, **kw) for n in (1, 10))
    assert one["vote_compute_h"] == pytest.approx(1e12 * (108 / 64) ** 3 / 1e6 / 3600)
    assert ten["vote_compute_h"] == pytest.approx(one["vote_compute_h"] / 10)
    assert one["db_write_h"] == ten["db_write_h"] == pytest.approx(1e12 * 1e-3 / 1e5 / 3600)
    assert one["agglomerate_h"] == ten["agglomerate_h"] == pytest.approx(1e12 * 1e-4 * 1e-5 / 3600)
    assert one["predict_h"] == 0.0  # no network rate: no predict term
    slow_db = bench_model.extrapolate_time(1e12, 100, **{**kw, "db_write_rows_per_s": 10.0})
    assert slow_db["vote_h"] == slow_db["db_write_h"] and slow_db["limiting"] == "vote (database writes)"
    net = bench_model.extrapolate_time(1e12, 10, **kw, network_voxels_per_s=1e5, network_ratio=1.5)
    assert net["predict_h"] == pytest.approx(1e12 * 1.5 / 10 / 1e5 / 3600) and net["limiting"] == "predict"
    assert one["total_h"] == pytest.approx(one["vote_h"] + one["agglomerate_h"] + one["paint_h"])

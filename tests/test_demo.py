"""The README's main command: the demo on the bundled sample, on a real local dask cluster."""

from __future__ import annotations

import re
import sqlite3

from ppp_dist.cli import main


def test_demo_runs_end_to_end(tmp_path, capsys):
    code = main(["demo", "--root", str(tmp_path), "--workers", "2"])
    out = capsys.readouterr().out
    assert code == 0, out
    assert re.search(r"dask dashboard: +http://127\.0\.0\.1:\d+/status", out)
    assert "instance voxels [3765, 6193, 14246], overlap voxels 2315" in out
    (exp,) = tmp_path.iterdir()
    assert (exp / "config.toml").is_file() and (exp / "logs" / "run.log").is_file()
    assert (exp / "sample.zarr" / "raw" / "zarr.json").is_file()
    with sqlite3.connect(exp / "graph.sqlite") as conn:
        assert conn.execute("SELECT count(*) FROM runs").fetchone() == (1,)
    assert re.search(r"vote +8 block\(s\) of \(25, 25, 25\), halo \(33, 33, 33\)", out)
    # the assembly on oracle patches of the sample, scored with the FlyLight metrics
    match = re.search(r"label \(oracle\): +(\d+) instances", out)
    assert match and int(match.group(1)) >= 3
    scores = re.search(r"evaluate \(oracle\): avF1 ([\d.]+), C ([\d.]+), S ([\d.]+)", out)
    assert scores and float(scores.group(2)) > 0.9  # every neuron's centreline is covered
    assert (exp / "evaluation" / "report.md").is_file()

"""scripts/gpu_check.py: one sentence and exit 2 without CUDA; argument checks; the table and comparison
helpers; and (slow) every step end to end with --tiny on the CPU, the CPU fallback of LocalCUDACluster
included, so the script cannot rot between GPU loans."""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_in_one_sentence_and_exits_2(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _module().main([]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    (line,) = captured.err.strip().splitlines()
    assert line.startswith("gpu_check: no CUDA device") and line.endswith(".") and line.count(". ") == 0


@pytest.mark.parametrize("args, message", [
    (["--size", "20"], "--size and --crop must be at least 34"),
    (["--crop", "8"], "--size and --crop must be at least 34"),
    (["--batch", "0"], "--batch must be >= 1"),
    (["--train-iterations", "-1"], "--train-iterations >= 0"),
    (["--size", "big"], "invalid int value"),
    (["--bogus"], "unrecognized arguments: --bogus"),
])
def test_bad_arguments_exit_2_with_one_message(args, message, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _module().main(args)
    assert exit_info.value.code == 2
    assert message in capsys.readouterr().err


def test_the_crop_never_exceeds_the_volume():
    args = _module().parse_args(["--size", "64", "--crop", "128"])
    assert (args.size, args.crop) == (64, 64)


def test_table_and_comparison():
    module = _module()
    table = module.format_table([("device", "cpu"), ("labels: fused vs CPU path", "byte-identical")])
    assert table.splitlines() == ["check                      result", "-------------------------  ------",
                                  "device                     cpu",
                                  "labels: fused vs CPU path  byte-identical"]
    a = np.array([[0, 10, 255], [3, 3, 3]], dtype=np.uint8)
    b = a.copy()
    assert module.compare_arrays(a, b) == {"values": 6, "differ": 0, "max_abs": 0}
    b[0, 2], b[1, 0] = 250, 4
    assert module.compare_arrays(a, b) == {"values": 6, "differ": 2, "max_abs": 5}


@pytest.mark.slow
@pytest.mark.skipif(os.environ.get("PPP_DIST_RUN_SLOW") != "1", reason="slow (about a minute); PPP_DIST_RUN_SLOW=1")
def test_tiny_self_test_runs_every_step_on_the_cpu(capsys, tmp_path):
    assert _module().main(["--tiny", "--size", "34", "--crop", "34", "--train-iterations", "2",
                           "--out", str(tmp_path)]) == 0
    rows = dict(line.split("  ", 1) for line in capsys.readouterr().out.strip().splitlines()[2:])
    rows = {k.strip(): v.strip() for k, v in rows.items()}
    assert rows["dask-cuda LocalCUDACluster"].startswith("LocalCluster: 0 GPU worker(s) of 1")  # the CPU fallback
    assert rows["labels: fused vs CPU path"] == f"byte-identical ({2 * 34 ** 3:,} labels)"
    assert rows["network, AMP on"] == "skipped: AMP needs CUDA"
    assert rows["total"].endswith("all checks passed")
    results = json.loads((tmp_path / "gpu_check.json").read_text())
    assert results["network_voxels_per_s_amp_off"] > 0 and results["fused_voxels_per_s"] > 0
    assert results["labels_fused_vs_cpu_path"]["differ"] == 0 and results["train_it_per_s"] > 0

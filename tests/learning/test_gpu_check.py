"""scripts/gpu_check.py: exits 0 without CUDA; its code path runs end to end with --tiny (also on the CPU)."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import torch

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "gpu_check.py"


def _module():
    spec = importlib.util.spec_from_file_location("gpu_check", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_without_cuda_it_says_so_and_exits_0(capsys, monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert _module().main([]) == 0
    assert "no CUDA device" in capsys.readouterr().out


def test_tiny_self_test_runs_every_step(capsys, tmp_path):
    assert _module().main(["--tiny", "--iterations", "2", "--size", "20", "--workers", "0",
                           "--out", str(tmp_path)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-3].startswith("train: 2 iterations") and lines[-2].startswith("predict:")
    result = json.loads(lines[-1])
    assert result["train_it_per_s"] > 0 and result["predict_volume_voxels_per_s"] > 0

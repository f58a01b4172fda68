"""The CPU demo (scripts/train_demo.py): ~6 minutes on 2 cores, so slow and off by default."""

from __future__ import annotations

import json

import pytest
from _learning_helpers import load_script, slow


@pytest.mark.slow
@slow
def test_demo_beats_connected_components_on_held_out_images(tmp_path):
    assert load_script("train_demo").main(["--out", str(tmp_path / "demo"), "--threads", "1"]) == 0
    mean = json.loads((tmp_path / "demo" / "summary.json").read_text())["mean"]
    assert mean["ppp_avS"] >= 0.7
    assert mean["ppp_avS"] > mean["cc_avS"]

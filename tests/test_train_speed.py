"""Tests of benchmarks/train_speed.py (PSB vs SAVi training-step time and FLOPs)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from benchmarks.train_speed import count_flops, main

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_count_flops_of_a_linear_layer_forward_and_backward() -> None:
    """x (2, 4) @ W (4, 3): 2·2·4·3 = 48 FLOPs forward; backward computes the input and weight
    gradients, 48 each."""
    layer = torch.nn.Linear(4, 3, bias=False)
    x = torch.randn(2, 4, requires_grad=True)
    assert count_flops(lambda: layer(x).sum().backward()) == 3 * 48
    with torch.no_grad():
        assert count_flops(lambda: layer(x)) == 48


def test_main_reports_times_flops_and_ratios(tmp_path: Path) -> None:
    out = tmp_path / "speed.json"
    result = main(["--ts", "3", "5", "--batch-size", "2", "--image-size", "32", "--num-slots", "4", "--slot-dim", "32",
                   "--num-blocks", "1", "--window", "2", "--repeats", "2", "--warmup", "0", "--no-memory",
                   "--device", "cpu", "--out", str(out)])
    written = json.loads(out.read_text())
    assert [row["T"] for row in written["rows"]] == [3, 5] == [row["T"] for row in result["rows"]]
    for row in written["rows"]:
        for kind in ("slot", "step"):
            assert row[f"psb_{kind}_gflop"] > 0 and row[f"savi_{kind}_gflop"] > 0
            assert row[f"{kind}_flop_ratio_savi_over_psb"] == pytest.approx(
                row[f"savi_{kind}_gflop"] / row[f"psb_{kind}_gflop"])
            assert len(row[f"psb_{kind}_all_s"]) == 2
        for encoder in ("psb", "savi"):  # the whole step includes the slot module
            assert row[f"{encoder}_step_gflop"] > row[f"{encoder}_slot_gflop"]
    short, long = written["rows"]
    assert long["savi_slot_gflop"] == pytest.approx(short["savi_slot_gflop"] * 5 / 3, rel=0.05)  # SAVi: linear in T

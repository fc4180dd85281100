"""benchmarks/long_episode.py on a short episode: rows of resident memory and step time for both wrappers."""

from __future__ import annotations

import pytest
import torch

from benchmarks import long_episode

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.mark.parametrize("kind", ["PSBObservationWrapper", "VecPSBWrapper"])
def test_rows_and_verdict(kind: str) -> None:
    from psb_rl import PSBAutoencoder, PSBConfig

    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(**long_episode.MODELS["small"], image_size=32))
    rows = long_episode.run_wrapper(kind, model, steps=150, every=60, window=20, baseline=20)  # past the time limit
    assert [row["step"] for row in rows] == [20, 60, 120, 150]
    assert all(row["rss_mb"] > 0 and row["median_step_ms"] > 0 and row["reference_step_ms"] > 0 for row in rows)
    verdict = long_episode.verdict(rows, baseline=20)
    assert verdict["baseline_step"] == 20 and verdict["last_step"] == 150
    assert isinstance(verdict["memory_ok"], bool) and abs(verdict["memory_growth"]) < 0.5

"""The README's Python example runs as written (with a 64-px video into a 32-px model)."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def readme_api_example() -> str:
    """The first ``python`` block of README.md that loads a checkpoint (the API example)."""
    blocks = re.findall(r"```python\n(.*?)```", (ROOT / "README.md").read_text(), flags=re.DOTALL)
    examples = [block for block in blocks if "load_checkpoint" in block]
    assert examples, "README.md has no Python example that loads a checkpoint"
    return examples[0]


def test_readme_example_runs_with_frames_of_another_size(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from psb_rl import PSBAutoencoder, PSBConfig, save_checkpoint

    torch.manual_seed(0)
    config = PSBConfig(image_size=32, num_slots=4, slot_dim=32, num_blocks=1, num_heads=2, window=3,
                       encoder_channels=16, decoder_channels=16)
    (tmp_path / "runs" / "psb").mkdir(parents=True)
    save_checkpoint(PSBAutoencoder(config), tmp_path / "runs" / "psb" / "psb.ckpt")
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    names = {  # the example's inputs at the environments' 64 px (the model's size is 32)
        "video": torch.rand(2, 3, 3, 64, 64),  # float (B, T, 3, H, W) in [0, 1]
        "frames": rng.integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8),  # uint8 (B, T, H, W, 3)
        "frames_t": rng.integers(0, 256, (8, 64, 64, 3), dtype=np.uint8),  # one frame per env
        "done_mask": np.array([True] + [False] * 7),
    }
    # agent.learn(N) runs as written with N = 0: PPO training itself is tested in test_agents.py
    code = re.sub(r"\.learn\([^)]*\)", ".learn(0)", readme_api_example())
    exec(compile(code, "README.md", "exec"), names)
    assert names["slots"].shape == (2, 3, 4, 32)
    if "slots_t" in names:
        assert names["slots_t"].shape == (8, 4, 32)
    with torch.no_grad():  # and model.encode takes the 64-px frames directly, as the wrappers prepare them
        assert names["model"].encode(names["frames"]).shape == (2, 3, 4, 32)

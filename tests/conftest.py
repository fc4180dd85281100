"""Shared fixtures: tiny model configs so the suite stays fast on 2 CPU cores.

Every test runs with one torch thread: the models are tiny, so intra-op threads gain nothing and cost a
lot on a busy machine. ``OMP_NUM_THREADS=1`` is set before torch loads, so subprocesses (SubprocVecEnv
workers, torchrun, scripts) inherit it too.
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")
os.environ.setdefault("MKL_NUM_THREADS", "1")

import gymnasium as gym
import numpy as np
import pytest
import torch

from psb_rl.config import PSBConfig

torch.set_num_threads(1)


@pytest.fixture(autouse=True)
def _one_torch_thread_per_test():
    """Restore one torch thread before every test (a test or library call may have changed it)."""
    torch.set_num_threads(1)
    yield


def tiny_config(**overrides) -> PSBConfig:
    """A small PSB config (32×32 frames, 4 slots of 32 dims) for tests."""
    fields = dict(image_size=32, num_slots=4, slot_dim=32, num_blocks=2, num_heads=2, window=3,
                  encoder_channels=16, decoder_channels=16, decoder_grid=8)
    fields.update(overrides)
    return PSBConfig(**fields)


def moving_squares_video(batch: int, steps: int, size: int = 32, seed: int = 0) -> torch.Tensor:
    """Float video ``(B, T, 3, size, size)`` of 2–3 coloured squares moving on black, bouncing off walls."""
    rng = np.random.default_rng(seed)
    colours = np.array([[1.0, 0.1, 0.1], [0.1, 1.0, 0.1], [0.2, 0.3, 1.0]], dtype=np.float32)
    video = np.zeros((batch, steps, 3, size, size), dtype=np.float32)
    side = size // 5
    for b in range(batch):
        count = rng.integers(2, 4)
        pos = rng.uniform(0, size - side, (count, 2))
        vel = rng.uniform(-2, 2, (count, 2))
        for t in range(steps):
            for k in range(count):
                y, x = pos[k].astype(int)
                video[b, t, :, y : y + side, x : x + side] = colours[k][:, None, None]
            pos += vel
            bounce = (pos < 0) | (pos > size - side)
            vel[bounce] *= -1
            pos = pos.clip(0, size - side)
    return torch.from_numpy(video)


def fit(model: torch.nn.Module, video: torch.Tensor, steps: int, lr: float) -> tuple[float, float]:
    """Train ``model`` on ``video`` for ``steps`` Adam steps; return the loss before and after (no grad)."""
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    with torch.no_grad():
        initial = model(video).loss.item()
    for _ in range(steps):
        loss = model(video).loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    with torch.no_grad():
        final = model(video).loss.item()
    return initial, final


@pytest.fixture
def one_torch_thread():
    """One torch thread for the test (the suite's default already; kept for tests that ask for it)."""
    torch.set_num_threads(1)
    yield


@pytest.fixture
def tiny_cfg() -> PSBConfig:
    return tiny_config()


class ToyImageEnv(gym.Env):
    """Random uint8 frames, fixed episode length; records every frame it emits in ``self.emitted``."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self, episode_length: int = 5, size: int = 24) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (size, size, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.episode_length = episode_length
        self.emitted: list[np.ndarray] = []
        self._t = 0

    def _frame(self) -> np.ndarray:
        frame = self.np_random.integers(0, 256, self.observation_space.shape, dtype=np.uint8)
        self.emitted.append(frame.copy())
        return frame

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self._t = 0
        return self._frame(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self._t += 1
        done = self._t >= self.episode_length
        return self._frame(), float(action), done, False, {"is_success": done}

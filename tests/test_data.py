"""Tests of psb_rl.data.RolloutDataset."""

from __future__ import annotations

import pickle
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from psb_rl.data import RolloutDataset, open_npz
from psb_rl.rollouts import (
    RolloutError,
    ShardChecksumError,
    collect_rollouts,
    episode_seed,
    load_shard_episodes,
)


class CounterEnv(gym.Env):
    """8×8 frames whose pixels encode (reset seed, time step, reset seed >> 8); episodes of 4..9 frames."""

    metadata = {"render_modes": []}  # noqa: RUF012

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (8, 8, 3), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.seed_value, self.t = 0, 0

    def _obs(self) -> tuple[np.ndarray, dict[str, Any]]:
        frame = np.zeros((8, 8, 3), np.uint8)
        frame[..., 0], frame[..., 1], frame[..., 2] = self.seed_value % 256, self.t, (self.seed_value >> 8) % 256
        return frame, {"masks": np.full((8, 8), self.t % 3, np.int32)}

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        super().reset(seed=seed)
        self.seed_value, self.t = int(seed or 0), 0
        return self._obs()

    def step(self, action: Any):
        self.t += 1
        obs, info = self._obs()
        return obs, 0.0, self.t >= 3 + self.seed_value % 6, False, info


gym.register("TestCounter-v0", entry_point=CounterEnv)


@pytest.fixture(scope="module")
def counter_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("counter")
    collect_rollouts("TestCounter-v0", root, episodes=30, episodes_per_shard=7, seed=100, progress=False)
    return root


def test_clips_never_cross_episode_boundaries(counter_dir: Path) -> None:
    ds = RolloutDataset(counter_dir, clip_len=5, split="all")
    lengths = [4 + episode_seed(100, i) % 6 for i in range(30)]  # frames per episode
    assert ds.num_episodes == 30
    assert len(ds) == sum(max(0, n - 5 + 1) for n in lengths)
    seen = set()
    for i in range(len(ds)):
        clip = ds[i]
        frames = clip["frames"]
        assert frames.shape == (5, 8, 8, 3) and frames.dtype == torch.uint8
        seeds = frames[:, 0, 0, 0].long() + 256 * frames[:, 0, 0, 2].long()
        times = frames[:, 0, 0, 1]
        assert torch.all(seeds == seeds[0]), "a clip must come from one episode"
        assert torch.equal(times, times[0] + torch.arange(5, dtype=torch.uint8)), "consecutive frames"
        episode, start = ds.window(i)
        assert int(seeds[0]) == episode_seed(100, episode) % 65536 and int(times[0]) == start
        assert clip["masks"].dtype == torch.int64 and torch.equal(clip["masks"][:, 0, 0], times.long() % 3)
        seen.add((episode, start))
    assert len(seen) == len(ds), "every valid window exactly once"


def test_stride_and_too_long_clips(counter_dir: Path) -> None:
    ds = RolloutDataset(counter_dir, clip_len=4, split="all", stride=3)
    assert all(ds.window(i)[1] % 3 == 0 for i in range(len(ds)))
    with pytest.raises(RolloutError, match="clip_len"):
        RolloutDataset(counter_dir, clip_len=50, split="all")


def test_split_is_deterministic_and_disjoint(counter_dir: Path) -> None:
    train = RolloutDataset(counter_dir, clip_len=2, split="train", val_fraction=0.25)
    val = RolloutDataset(counter_dir, clip_len=2, split="val", val_fraction=0.25)
    again = RolloutDataset(counter_dir, clip_len=2, split="val", val_fraction=0.25, verify=False)
    assert set(train.episode_indices).isdisjoint(val.episode_indices)
    assert sorted(train.episode_indices + val.episode_indices) == list(range(30))
    assert val.episode_indices == again.episode_indices and 2 <= val.num_episodes <= 14
    other = RolloutDataset(counter_dir, clip_len=2, split="val", val_fraction=0.25, split_seed=1)
    assert other.episode_indices != val.episode_indices
    clip_episodes = {val.window(i)[0] for i in range(len(val))}
    assert clip_episodes <= set(val.episode_indices)


def test_whole_episodes_for_evaluation(counter_dir: Path) -> None:
    val = RolloutDataset(counter_dir, clip_len=2, split="val", val_fraction=0.25)
    episodes = list(val.episodes())
    assert [e["episode_index"] for e in episodes] == val.episode_indices
    for e in episodes:
        n = 4 + episode_seed(100, e["episode_index"]) % 6
        assert e["frames"].shape == (n, 8, 8, 3) and e["masks"].shape == (n, 8, 8)
        assert torch.equal(e["frames"][:, 0, 0, 1], torch.arange(n, dtype=torch.uint8))


def test_dataloader_workers_and_pickling(counter_dir: Path) -> None:
    ds = RolloutDataset(counter_dir, clip_len=3, split="all", cache_shards=1)
    _ = ds[0], ds[len(ds) - 1]  # opens shards in this process
    assert len(pickle.dumps(ds)) < 20_000, "no arrays or file handles are pickled"
    loader = DataLoader(ds, batch_size=8, shuffle=True, num_workers=2, generator=torch.Generator().manual_seed(0))
    total = 0
    for batch in loader:
        assert batch["frames"].shape[1:] == (3, 8, 8, 3) and batch["masks"].shape[1:] == (3, 8, 8)
        assert torch.all(batch["frames"][:, :, 0, 0, 0] == batch["frames"][:, :1, 0, 0, 0])
        total += len(batch["frames"])
    assert total == len(ds)
    assert len(ds._cache) <= 1


def test_mmap_and_compressed_shards_read_the_same(counter_dir: Path, tmp_path: Path) -> None:
    arrays = open_npz(counter_dir / "shard-00000.npz", mmap=True)
    assert isinstance(arrays["frames"], np.memmap)
    loaded = open_npz(counter_dir / "shard-00000.npz", mmap=False)
    assert all(np.array_equal(arrays[k], loaded[k]) for k in loaded)
    collect_rollouts("TestCounter-v0", tmp_path, episodes=30, episodes_per_shard=7, seed=100, compress=True,
                     progress=False)
    a = RolloutDataset(counter_dir, clip_len=4, split="all")
    b = RolloutDataset(tmp_path, clip_len=4, split="all")
    assert len(a) == len(b)
    for i in range(0, len(a), 7):
        assert torch.equal(a[i]["frames"], b[i]["frames"]) and torch.equal(a[i]["masks"], b[i]["masks"])


def test_image_size_resizes_frames_and_masks(tmp_path: Path) -> None:
    collect_rollouts("PSB/RandomObjects-v0", tmp_path, episodes=2, max_episode_steps=6, progress=False)
    ds = RolloutDataset(tmp_path, clip_len=4, split="all", image_size=32)
    clip = ds[0]
    assert clip["frames"].shape == (4, 32, 32, 3) and clip["masks"].shape == (4, 32, 32)
    full = load_shard_episodes(tmp_path / "shard-00000.npz")[0]
    from psb_rl.preprocessing import resize_uint8_frames
    from psb_rl.sizes import resize_masks

    assert np.array_equal(clip["frames"].numpy(), resize_uint8_frames(full["frames"][:4], 32))
    assert np.array_equal(clip["masks"].numpy(), resize_masks(full["masks"][:4], 32).astype(np.int64))
    assert set(np.unique(clip["masks"].numpy())) <= set(np.unique(full["masks"]))


def test_flipped_bytes_give_a_clear_error(tmp_path: Path) -> None:
    collect_rollouts("TestCounter-v0", tmp_path, episodes=6, episodes_per_shard=3, progress=False)
    path = tmp_path / "shard-00001.npz"
    raw = bytearray(path.read_bytes())
    raw[-200] ^= 0x01
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardChecksumError, match=r"shard-00001\.npz.*corrupted"):
        RolloutDataset(tmp_path, clip_len=2)
    RolloutDataset(tmp_path, clip_len=2, verify=False)  # opt-out still opens
    path.unlink()
    with pytest.raises(ShardChecksumError, match=r"shard-00001\.npz.*missing"):
        RolloutDataset(tmp_path, clip_len=2)


def test_missing_or_empty_directory(tmp_path: Path) -> None:
    for root in (tmp_path / "nope", tmp_path):
        with pytest.raises(RolloutError, match=r"run python pretrain/collect_rollouts\.py --out") as err:
            RolloutDataset(root, clip_len=4)
        assert str(root) in str(err.value)
    with pytest.raises(ValueError, match="split"):
        RolloutDataset(tmp_path, clip_len=4, split="test")


def test_manifest_entries_that_disagree_with_their_shard_are_refused(tmp_path) -> None:
    import json

    from psb_rl.data import RolloutDataset
    from psb_rl.rollouts import collect_rollouts
    from psb_rl.shards import RolloutError

    root = tmp_path / "data"
    collect_rollouts("PSB/RandomObjects-v0", root, episodes=2, episodes_per_shard=2, resize=16, max_episode_steps=5,
                     seed=0, progress=False)
    manifest = json.loads((root / "manifest.json").read_text())
    entry = manifest["shards"][0]
    entry["episode_lengths"] = [entry["episode_lengths"][0] + 1, entry["episode_lengths"][1] - 1]  # same total
    (root / "manifest.json").write_text(json.dumps(manifest))
    dataset = RolloutDataset(root, clip_len=2, split="all")  # the shard's checksum still matches
    with pytest.raises(RolloutError, match=r"shard-00000\.npz: its episodes disagree with its manifest entry.*--repair"):
        dataset[0]
    entry["episode_indices"] = entry["episode_indices"][:1]
    (root / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(RolloutError, match=r"2 episodes, 2 lengths and 1 indices"):
        RolloutDataset(root, clip_len=2, split="all")

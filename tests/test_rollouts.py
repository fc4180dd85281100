"""Tests of psb_rl.rollouts, pretrain/collect_rollouts.py and the dataclass CLI helper psb_rl.cli."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

import gymnasium as gym
import numpy as np
import pytest

from psb_rl.cli import parse_dataclass
from psb_rl.rollouts import (
    MANIFEST_NAME,
    RolloutError,
    ShardChecksumError,
    collect_rollouts,
    episode_seed,
    load_manifest,
    load_shard,
    load_shard_episodes,
    verify_rollouts,
)

REPO = Path(__file__).resolve().parents[1]
SCRIPT = REPO / "pretrain" / "collect_rollouts.py"


def _episodes_by_index(root: Path) -> dict[int, dict[str, np.ndarray]]:
    manifest = load_manifest(root)
    return {int(ep["episode_index"]): ep for e in manifest["shards"]
            for ep in load_shard_episodes(root / e["file"])}


def test_collect_psb_writes_manifest_and_shards(tmp_path: Path) -> None:
    out = tmp_path / "r"
    manifest = collect_rollouts("PSB/ObjectReach-v0", out, episodes=5, episodes_per_shard=2, seed=1,
                                max_episode_steps=30, progress=False)
    assert sorted(p.name for p in out.iterdir()) == [MANIFEST_NAME, "shard-00000.npz", "shard-00001.npz",
                                                     "shard-00002.npz"]
    assert manifest == json.loads((out / MANIFEST_NAME).read_text())
    assert manifest["format_version"] == 1 and manifest["env_id"] == "PSB/ObjectReach-v0"
    assert manifest["frame_shape"] == [64, 64, 3] and manifest["has_masks"] and manifest["complete"]
    assert manifest["num_episodes"] == 5 and [s["num_episodes"] for s in manifest["shards"]] == [2, 2, 1]
    assert all(len(s["sha256"]) == 64 for s in manifest["shards"])
    verify_rollouts(out)
    data = load_shard(out / "shard-00000.npz")
    lengths = data["episode_lengths"]
    assert data["frames"].shape == (lengths.sum(), 64, 64, 3) and data["frames"].dtype == np.uint8
    assert data["masks"].shape == (lengths.sum(), 64, 64)
    assert data["actions"].shape == data["rewards"].shape == (lengths.sum() - len(lengths),)
    eps = _episodes_by_index(out)
    assert sorted(eps) == [0, 1, 2, 3, 4]
    for i, ep in eps.items():
        steps = len(ep["actions"])
        assert len(ep["frames"]) == steps + 1 and 1 <= steps <= 30
        assert ep["terminated"][-1] or ep["truncated"][-1]
        assert not (ep["terminated"][:-1].any() or ep["truncated"][:-1].any())
        # frame 0 is the reset observation of seed + index
        env = gym.make("PSB/ObjectReach-v0", return_masks=True)
        obs, info = env.reset(seed=episode_seed(1, i))
        assert np.array_equal(ep["frames"][0], obs) and np.array_equal(ep["masks"][0], info["masks"])
    assert manifest["num_frames"] == sum(len(e["frames"]) for e in eps.values())


def test_vector_envs_give_the_same_episodes(tmp_path: Path) -> None:
    a = collect_rollouts("PSB/RandomObjects-v0", tmp_path / "a", episodes=4, num_envs=1, seed=5,
                         max_episode_steps=12, progress=False)
    b = collect_rollouts("PSB/RandomObjects-v0", tmp_path / "b", episodes=4, num_envs=2, seed=5,
                         max_episode_steps=12, progress=False)
    assert a["num_episodes"] == b["num_episodes"] == 4
    ea, eb = _episodes_by_index(tmp_path / "a"), _episodes_by_index(tmp_path / "b")
    assert sorted(ea) == sorted(eb) == [0, 1, 2, 3]
    for i in ea:
        for key in ("frames", "masks", "actions", "rewards", "terminated", "truncated"):
            assert np.array_equal(ea[i][key], eb[i][key]), (i, key)


def test_steps_target_stores_whole_episodes(tmp_path: Path) -> None:
    manifest = collect_rollouts("PSB/RandomObjects-v0", tmp_path, steps=25, max_episode_steps=10,
                                progress=False, masks=False)
    assert manifest["num_steps"] == 30 and manifest["num_episodes"] == 3 and not manifest["has_masks"]
    assert "masks" not in load_shard(tmp_path / "shard-00000.npz")


def test_killed_collection_leaves_whole_shards_and_resume_finishes(tmp_path: Path) -> None:
    out = tmp_path / "killed"
    cmd = [sys.executable, str(SCRIPT), "--env", "PSB/RandomObjects-v0", "--episodes", "200",
           "--episodes-per-shard", "2", "--max-episode-steps", "10", "--resize", "16", "--seed", "3", "--out", str(out), "--no-progress"]
    proc = subprocess.Popen(cmd, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while not (out / "shard-00000.npz").exists():
        assert proc.poll() is None, proc.stderr.read().decode()
        assert time.time() < deadline
        time.sleep(0.01)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    manifest = load_manifest(out)
    assert not manifest["complete"] and manifest["num_episodes"] < 200
    listed = {e["file"] for e in manifest["shards"]}
    for p in out.iterdir():  # only whole shards: every shard file loads; listed ones verify
        if p.name.startswith("shard-"):
            assert len(load_shard(p)["episode_lengths"]) == 2
    verify_rollouts(out)  # the manifest lists only shards that are complete (maybe none yet)
    assert listed <= {p.name for p in out.iterdir()}

    # resuming with other settings is refused, plain re-run without --resume too
    with pytest.raises(RolloutError, match="seed"):
        collect_rollouts("PSB/RandomObjects-v0", out, episodes=200, resize=16, seed=4, resume=True,
                         episodes_per_shard=2, max_episode_steps=10, progress=False)
    with pytest.raises(RolloutError, match="--resume"):
        collect_rollouts("PSB/RandomObjects-v0", out, episodes=200, resize=16, seed=3, max_episode_steps=10,
                         progress=False)

    done = subprocess.run([*cmd, "--resume"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    manifest = verify_rollouts(out)
    assert manifest["complete"] and manifest["num_episodes"] == 200 and manifest["num_steps"] == 200 * 10
    indices = [i for e in manifest["shards"] for i in e["episode_indices"]]
    assert sorted(indices) == list(range(200))
    assert not [p for p in out.iterdir() if p.name.endswith(".tmp")]
    assert {p.name for p in out.iterdir()} == {MANIFEST_NAME} | {e["file"] for e in manifest["shards"]}

    # the resumed collection equals an uninterrupted one, episode by episode
    ref = collect_rollouts("PSB/RandomObjects-v0", tmp_path / "ref", episodes=4, resize=16, seed=3,
                           max_episode_steps=10, progress=False)
    assert ref["frame_shape"] == [16, 16, 3]
    got, want = _episodes_by_index(out), _episodes_by_index(tmp_path / "ref")
    for i in range(4):
        for key in ("frames", "masks", "actions", "rewards"):
            assert np.array_equal(got[i][key], want[i][key]), (i, key)


def test_flipped_bytes_name_the_shard(tmp_path: Path) -> None:
    collect_rollouts("PSB/OddOneOut-v0", tmp_path, episodes=4, episodes_per_shard=2, max_episode_steps=5,
                     progress=False)
    path = tmp_path / "shard-00001.npz"
    raw = bytearray(path.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    path.write_bytes(bytes(raw))
    with pytest.raises(ShardChecksumError, match=r"shard-00001\.npz"):
        verify_rollouts(tmp_path)
    with pytest.raises(ShardChecksumError, match=r"shard-00001\.npz"):  # resume verifies too
        collect_rollouts("PSB/OddOneOut-v0", tmp_path, episodes=6, episodes_per_shard=2, max_episode_steps=5,
                         resume=True, progress=False)


def test_pong_resized(tmp_path: Path) -> None:
    manifest = collect_rollouts("ALE/Pong-v5", tmp_path, episodes=2, resize=64, max_episode_steps=50,
                                progress=False)
    assert manifest["frame_shape"] == [64, 64, 3] and not manifest["has_masks"]
    eps = _episodes_by_index(tmp_path)
    assert [len(e["frames"]) for e in eps.values()] == [51, 51]
    assert all(e["truncated"][-1] for e in eps.values())
    assert eps[0]["frames"].std() > 0


def test_non_image_env_says_pass_pixels_render(tmp_path: Path) -> None:
    with pytest.raises(RolloutError, match="--pixels render") as err:
        collect_rollouts("CartPole-v1", tmp_path / "cp", episodes=1, progress=False)
    assert "AddRenderObservation" in str(err.value)
    assert not (tmp_path / "cp" / MANIFEST_NAME).exists()
    res = subprocess.run([sys.executable, str(SCRIPT), "--env", "CartPole-v1", "--episodes", "1",
                          "--out", str(tmp_path / "cp2")], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert res.returncode == 2 and "--pixels render" in res.stderr


def test_pixels_render_and_sb3_policy(tmp_path: Path) -> None:
    from stable_baselines3 import PPO

    env_kwargs = {"obs_mode": "state"}
    model = PPO("MlpPolicy", gym.make("PSB/ObjectReach-v0", **env_kwargs), n_steps=64, seed=0)
    model.save(tmp_path / "ppo.zip")
    manifest = collect_rollouts("PSB/ObjectReach-v0", tmp_path / "r", episodes=2, pixels="render",
                                env_kwargs=env_kwargs, policy=str(tmp_path / "ppo.zip"), resize=32,
                                deterministic_policy=True, max_episode_steps=20, progress=False)
    assert manifest["frame_shape"] == [32, 32, 3] and manifest["has_masks"]
    ep = _episodes_by_index(tmp_path / "r")[0]
    env = gym.make("PSB/ObjectReach-v0", render_mode="rgb_array", return_masks=True, **env_kwargs)
    obs, _ = env.reset(seed=episode_seed(0, 0))
    from psb_rl.preprocessing import resize_uint8_frames

    assert np.array_equal(ep["frames"][0], resize_uint8_frames(env.render(), 32))
    for a in ep["actions"]:  # the stored actions are the deterministic PPO actions on the state obs
        assert a == model.predict(obs, deterministic=True)[0]
        obs, *_ = env.step(a)
    with pytest.raises(FileNotFoundError, match="random"):
        collect_rollouts("PSB/ObjectReach-v0", tmp_path / "x", episodes=1, policy="missing.zip", progress=False)


@dataclass
class _Args:
    """Demo arguments."""

    out: str = field(metadata={"help": "where to write"})
    env_id: str = "PSB/RandomObjects-v0"
    """the environment id"""
    num_envs: int = 1  # parallel environments
    resize: int | None = None
    """resize to N"""
    progress: bool = True
    """show a progress bar"""
    pixels: Literal["obs", "render"] = "obs"
    """frame source"""
    sizes: tuple[int, ...] = (1, 2)
    """several ints"""
    lr: float = 3e-4
    """learning rate"""


def test_parse_dataclass() -> None:
    args = parse_dataclass(_Args, ["--out", "d", "--env-id", "ALE/Pong-v5", "--num-envs", "4", "--resize",
                                   "64", "--no-progress", "--pixels", "render", "--sizes", "3", "4", "5",
                                   "--lr", "1e-3"])
    assert args == _Args(out="d", env_id="ALE/Pong-v5", num_envs=4, resize=64, progress=False,
                         pixels="render", sizes=(3, 4, 5), lr=1e-3)
    defaults = parse_dataclass(_Args, ["--out", "d", "--resize", "none"])
    assert defaults == _Args(out="d")
    with pytest.raises(SystemExit):
        parse_dataclass(_Args, [])  # --out is required
    with pytest.raises(SystemExit):
        parse_dataclass(_Args, ["--out", "d", "--pixels", "rgb"])


def test_parse_dataclass_help_texts(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        parse_dataclass(_Args, ["--help"])
    text = capsys.readouterr().out
    for snippet in ("where to write", "the environment id", "parallel environments", "--no-progress",
                    "learning rate", "Demo arguments"):
        assert snippet in text

"""Tests of psb_rl.rollouts, pretrain/collect_rollouts.py and the dataclass CLI helper psb_rl.cli."""

from __future__ import annotations

import importlib.util
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
    sha256_file,
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
    while not (out / MANIFEST_NAME).exists() or not json.loads((out / MANIFEST_NAME).read_text())["shards"]:
        # (a manifest that lists no shard yet is not an earlier collection: it would be started afresh)
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
    ocatari = importlib.util.find_spec("ocatari") is not None  # Atari masks come from OCAtari's object lists
    assert manifest["frame_shape"] == [64, 64, 3] and manifest["has_masks"] == ocatari
    eps = _episodes_by_index(tmp_path)
    if ocatari:
        assert eps[0]["masks"].shape == (51, 64, 64) and (eps[0]["masks"] > 0).any()
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


def _save_agent(run: Path, encoder: str, env: gym.Env, checkpoint: Path | None = None) -> Path:
    """An untrained agent of agents/train_ppo.py saved as a run folder (model.zip + args.json)."""
    from agents.train_ppo import Args
    from psb_rl.agent_io import build_agent, run_record
    from psb_rl.utils import write_json

    args = Args(env=env.spec.id, encoder=encoder, checkpoint=str(checkpoint) if checkpoint else None, n_steps=64,
                batch_size=64, features_dim=16, d_model=16, num_layers=1, num_heads=2, seed=0, out=str(run))
    space = env.observation_space
    if encoder == "slots":
        from psb_rl import load_checkpoint

        config = load_checkpoint(checkpoint).config
        space = gym.spaces.Box(-np.inf, np.inf, (config.num_slots, config.slot_dim), np.float32)
    elif encoder == "pixels":
        from stable_baselines3.common.vec_env import VecTransposeImage

        space = VecTransposeImage.transpose_space(space)
    agent = build_agent(args, (space, env.action_space), "cpu")
    run.mkdir(parents=True, exist_ok=True)
    agent.save(run / "model.zip")
    write_json(run / "args.json", run_record(args))
    return run / "model.zip"


def test_pixels_render_with_a_saved_state_agent(tmp_path: Path) -> None:
    env_kwargs = {"obs_mode": "state"}
    model_path = _save_agent(tmp_path / "run", "state", gym.make("PSB/ObjectReach-v0", **env_kwargs))
    manifest = collect_rollouts("PSB/ObjectReach-v0", tmp_path / "r", episodes=2, pixels="render",
                                env_kwargs=env_kwargs, policy=str(model_path), resize=32,
                                deterministic_policy=True, max_episode_steps=20, progress=False)
    assert manifest["frame_shape"] == [32, 32, 3] and manifest["has_masks"]
    ep = _episodes_by_index(tmp_path / "r")[0]
    env = gym.make("PSB/ObjectReach-v0", render_mode="rgb_array", return_masks=True, **env_kwargs)
    obs, _ = env.reset(seed=episode_seed(0, 0))
    from psb_rl.preprocessing import resize_uint8_frames

    assert np.array_equal(ep["frames"][0], resize_uint8_frames(env.render(), 32))
    from psb_rl.agent_io import load_agent_policy

    policy = load_agent_policy(model_path, env.observation_space, env.action_space, deterministic=True)
    for a in ep["actions"]:  # the stored actions are the deterministic agent's actions on the state obs
        assert a == policy(obs[None])[0]
        obs, *_ = env.step(a)
    with pytest.raises(FileNotFoundError, match="random"):
        collect_rollouts("PSB/ObjectReach-v0", tmp_path / "x", episodes=1, policy="missing.zip", progress=False)
    assert not (tmp_path / "x").exists(), "a failed collection leaves no directory behind"


@pytest.mark.parametrize("encoder", ["slots", "pixels"])
def test_slot_and_pixel_agents_collect(tmp_path: Path, encoder: str) -> None:
    import torch

    from psb_rl import PSBAutoencoder, PSBConfig, StreamingEncoder, save_checkpoint

    checkpoint = None
    if encoder == "slots":
        torch.manual_seed(0)
        checkpoint = save_checkpoint(PSBAutoencoder(PSBConfig(image_size=32, num_slots=3, slot_dim=16, num_blocks=1,
                                                              num_heads=2, window=2, encoder_channels=8,
                                                              decoder_channels=8, decoder_grid=8)),
                                     tmp_path / "psb.ckpt")
    env = gym.make("PSB/OddOneOut-v0")
    model_path = _save_agent(tmp_path / "run", encoder, env, checkpoint)
    collect_rollouts("PSB/OddOneOut-v0", tmp_path / "r", episodes=2, num_envs=2, policy=str(model_path),
                     deterministic_policy=True, max_episode_steps=6, masks=False, progress=False)
    from psb_rl.agent_io import load_agent_policy

    agent = load_agent_policy(model_path, env.observation_space, env.action_space, deterministic=True).agent
    for index, ep in _episodes_by_index(tmp_path / "r").items():  # replay each episode through the agent
        stream = StreamingEncoder(load_checkpoint_or_none(checkpoint), num_envs=1) if checkpoint else None
        for frame, action in zip(ep["frames"][:-1], ep["actions"], strict=True):
            obs = (stream.step(frame[None]).numpy() if stream else np.moveaxis(frame, -1, 0)[None])
            assert agent.predict(obs, deterministic=True)[0][0] == action, index
    if encoder == "slots":  # another checkpoint in its place is refused, naming both
        from psb_rl.checkpoint import CheckpointError

        torch.manual_seed(1)
        save_checkpoint(PSBAutoencoder(load_checkpoint_or_none(checkpoint).config), checkpoint)
        with pytest.raises(CheckpointError, match=r"psb\.ckpt.*not the PSB checkpoint.*sha256"):
            collect_rollouts("PSB/OddOneOut-v0", tmp_path / "r2", episodes=1, policy=str(model_path),
                             max_episode_steps=6, masks=False, progress=False)


def load_checkpoint_or_none(path: Path | None):
    from psb_rl import load_checkpoint

    return load_checkpoint(path) if path else None


def _crafted_zip(source: Path, target: Path, marker: Path) -> Path:
    """A copy of an agent zip whose pickled parts would create ``marker`` when unpickled."""
    import base64
    import pickle
    import zipfile

    class Payload:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    blob = pickle.dumps(Payload())
    with zipfile.ZipFile(source) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    data = json.loads(entries["data"])
    for value in data.values():
        if isinstance(value, dict) and ":serialized:" in value:
            value[":serialized:"] = base64.b64encode(blob).decode()
    entries["data"] = json.dumps(data).encode()
    entries["policy.pth"] = blob
    with zipfile.ZipFile(target, "w") as archive:
        for name, content in entries.items():
            archive.writestr(name, content)
    return target


def test_crafted_agent_zip_runs_no_code(tmp_path: Path) -> None:
    env_kwargs = {"obs_mode": "state"}
    model_path = _save_agent(tmp_path / "run", "state", gym.make("PSB/ObjectReach-v0", **env_kwargs))
    marker = tmp_path / "marker"
    beside_args = _crafted_zip(model_path, tmp_path / "run" / "crafted.zip", marker)  # with its run's args.json
    (tmp_path / "alone").mkdir()
    alone = _crafted_zip(model_path, tmp_path / "alone" / "model.zip", marker)  # a foreign zip: no args.json
    for path in (beside_args, alone):
        with pytest.raises(ValueError):
            collect_rollouts("PSB/ObjectReach-v0", tmp_path / "r", episodes=1, pixels="render", env_kwargs=env_kwargs,
                             policy=str(path), max_episode_steps=5, progress=False)
        assert not marker.exists(), f"loading {path.name} ran its payload"
    res = subprocess.run([sys.executable, str(SCRIPT), "--env", "PSB/ObjectReach-v0", "--pixels", "render",
                          "--env-kwargs", json.dumps(env_kwargs), "--episodes", "1", "--policy", str(alone),
                          "--out", str(tmp_path / "r"), "--no-progress"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and "args.json" in res.stderr, res.stderr
    assert len(res.stderr.strip().splitlines()) == 1 and "Traceback" not in res.stderr
    assert not marker.exists() and not (tmp_path / "r" / MANIFEST_NAME).exists()


def test_repair_recollects_damaged_shards_exactly(tmp_path: Path) -> None:
    settings = dict(episodes=6, episodes_per_shard=2, resize=16, seed=5, max_episode_steps=6, progress=False)
    collect_rollouts("PSB/RandomObjects-v0", tmp_path / "clean", **settings)
    damaged = tmp_path / "damaged"
    collect_rollouts("PSB/RandomObjects-v0", damaged, **settings)
    raw = bytearray((damaged / "shard-00001.npz").read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    (damaged / "shard-00001.npz").write_bytes(bytes(raw))
    (damaged / "shard-00002.npz").unlink()
    with pytest.raises(ShardChecksumError, match="--repair"):
        verify_rollouts(damaged)
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(damaged), "--repair", "--no-progress"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    repaired, clean = verify_rollouts(damaged), load_manifest(tmp_path / "clean")
    assert [e["file"] for e in repaired["shards"]] == [e["file"] for e in clean["shards"]]
    for key in ("num_episodes", "num_frames", "num_steps", "complete"):
        assert repaired[key] == clean[key], key
    # the same bytes: a PSB run trained on the data before the damage can be resumed on the repaired data
    assert sha256_file(damaged / MANIFEST_NAME) == sha256_file(tmp_path / "clean" / MANIFEST_NAME)
    for a, b in zip(repaired["shards"], clean["shards"], strict=True):
        got, want = load_shard(damaged / a["file"]), load_shard(tmp_path / "clean" / b["file"])
        assert got.keys() == want.keys()
        assert all(np.array_equal(got[k], want[k]) for k in want), a["file"]


def test_failed_first_collection_leaves_nothing_that_blocks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import psb_rl.rollouts as rollouts

    out = tmp_path / "r"
    settings = dict(episodes=2, episodes_per_shard=1, max_episode_steps=4, progress=False)

    def crash(*_args, **_kwargs):
        raise RuntimeError("environment crashed")

    monkeypatch.setattr(rollouts, "_run", crash)
    with pytest.raises(RuntimeError, match="crashed"):
        collect_rollouts("PSB/RandomObjects-v0", out, **settings)
    assert not out.exists()
    out.mkdir()  # an existing directory is kept, without a manifest
    with pytest.raises(RuntimeError, match="crashed"):
        collect_rollouts("PSB/RandomObjects-v0", out, **settings)
    assert out.is_dir() and not list(out.iterdir())
    monkeypatch.undo()
    (out / MANIFEST_NAME).write_text(json.dumps({"format_version": 1, "shards": [], "complete": False}))
    manifest = collect_rollouts("PSB/RandomObjects-v0", out, seed=7, **settings)  # a killed start: not blocking
    assert manifest["complete"] and manifest["num_episodes"] == 2


def test_collection_directory_is_locked(tmp_path: Path) -> None:
    from psb_rl.utils import RunDirError, run_lock

    with run_lock(tmp_path / "r"), pytest.raises(RunDirError, match=rf"pid {os.getpid()}"):
        collect_rollouts("PSB/RandomObjects-v0", tmp_path / "r", episodes=1, max_episode_steps=3, progress=False)
    (tmp_path / "file").write_text("")
    with pytest.raises(RunDirError, match="existing file"):
        collect_rollouts("PSB/RandomObjects-v0", tmp_path / "file", episodes=1, progress=False)


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


def test_render_frames_of_dict_observation_envs_in_parallel(tmp_path: Path) -> None:
    """MiniGrid's observations (a dict with text) cannot go through shared memory: render collection still runs."""
    manifest = collect_rollouts("MiniGrid-Empty-5x5-v0", tmp_path, episodes=2, num_envs=2, pixels="render",
                                resize=(24, 20), max_episode_steps=5, env_kwargs={"tile_size": 8}, progress=False)
    assert manifest["frame_shape"] == [24, 20, 3]
    assert manifest["frame_pipeline"] == {"source": "render", "crop": [0, 0, 0, 0], "size": [24, 20],
                                          "input_size": [40, 40]}


def test_collection_stores_mask_categories(tmp_path: Path) -> None:
    from psb_rl.envs.object_envs import OBJECT_KINDS

    manifest = collect_rollouts("PSB/ObjectReach-v0", tmp_path / "psb", episodes=2, seed=0, max_episode_steps=5,
                                progress=False)
    assert manifest["mask_categories"] == list(OBJECT_KINDS)
    for ep in _episodes_by_index(tmp_path / "psb").values():
        assert ep["mask_categories"].shape == (len(ep["frames"]), 9) and ep["mask_categories"].dtype == np.int16
        names = {OBJECT_KINDS[c] for c in ep["mask_categories"][0] if c >= 0}
        assert names == {"agent", "target", "distractor"}
        assert set(np.unique(ep["masks"])) <= {0} | set(np.flatnonzero(ep["mask_categories"][0] >= 0).tolist())


def test_collection_stores_minigrid_ground_truth_at_native_resolution(tmp_path: Path) -> None:
    pytest.importorskip("minigrid")
    from psb_rl.ground_truth import MINIGRID_CATEGORIES, MiniGridMasks

    env_id = "minigrid:MiniGrid-DoorKey-5x5-v0"
    manifest = collect_rollouts(env_id, tmp_path / "mg", episodes=2, seed=3, pixels="render", max_episode_steps=6,
                                progress=False)
    assert manifest["has_masks"] and manifest["mask_categories"] == list(MINIGRID_CATEGORIES)
    for index, ep in _episodes_by_index(tmp_path / "mg").items():
        assert ep["masks"].shape == ep["frames"].shape[:3] == (len(ep["frames"]), 160, 160)
        env = MiniGridMasks(gym.make(env_id, render_mode="rgb_array"))
        _, info = env.reset(seed=episode_seed(3, index))
        np.testing.assert_array_equal(ep["frames"][0], env.render())
        np.testing.assert_array_equal(ep["masks"][0], info["masks"])
        np.testing.assert_array_equal(ep["mask_categories"][0], info["mask_categories"])
    # without masks=True nothing is recorded
    plain = collect_rollouts(env_id, tmp_path / "plain", episodes=1, seed=3, pixels="render", max_episode_steps=3,
                             progress=False, masks=False)
    assert not plain["has_masks"] and plain["mask_categories"] == []


def _digests(root: Path) -> dict[str, str]:
    return {p.name: sha256_file(p) for p in sorted(root.iterdir()) if p.is_file()}


def test_shards_without_a_manifest_are_never_collected_over(tmp_path: Path) -> None:
    from psb_rl.training import TrainArgs, train

    out = tmp_path / "data"
    collect_rollouts("PSB/RandomObjects-v0", out, episodes=4, episodes_per_shard=2, resize=16, seed=2,
                     max_episode_steps=6, progress=False)
    manifest = load_manifest(out)
    (out / MANIFEST_NAME).unlink()
    shards = _digests(out)
    assert len(shards) == 2
    with pytest.raises(RolloutError, match=r"2 shard file\(s\) .*but no manifest\.json.*--repair.*another"):
        collect_rollouts("PSB/RandomObjects-v0", out, episodes=2, progress=False)
    with pytest.raises(RolloutError, match=r"no manifest\.json.*--repair"):
        collect_rollouts("PSB/RandomObjects-v0", out, episodes=2, resume=True, progress=False)
    with pytest.raises(RolloutError, match=r"no manifest\.json"):  # train_psb.py --data: no collection over them
        train(TrainArgs(data=str(out), out=str(tmp_path / "run"), steps=1, progress=False))
    assert _digests(out) == shards and not (tmp_path / "run").exists()
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--episodes", "2", "--no-progress"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 2 and res.stderr.count("\n") == 1 and res.stderr.startswith("error: "), res.stderr
    assert _digests(out) == shards

    # --repair rebuilds the manifest from the intact shards and touches none of them
    (out / "shard-00007.npz").write_bytes(b"not a shard")
    res = subprocess.run([sys.executable, str(SCRIPT), "--out", str(out), "--repair", "--no-progress"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stderr
    assert "shard-00007.npz" in res.stdout  # named as left out
    rebuilt = verify_rollouts(out)
    assert rebuilt["rebuilt_from_shards"] and rebuilt["settings_unknown"]
    assert [e["file"] for e in rebuilt["shards"]] == [e["file"] for e in manifest["shards"]]
    for key in ("num_episodes", "num_frames", "num_steps", "frame_shape", "has_masks"):
        assert rebuilt[key] == manifest[key], key
    assert all(_digests(out)[name] == digest for name, digest in shards.items())
    with pytest.raises(RolloutError, match="settings differ"):  # its settings are unknown: no collection adds to it
        collect_rollouts("PSB/RandomObjects-v0", out, episodes=6, resume=True, progress=False)


def test_resume_leaves_shard_files_the_manifest_does_not_list(tmp_path: Path) -> None:
    out = tmp_path / "data"
    settings = dict(episodes_per_shard=1, resize=16, seed=2, max_episode_steps=4, progress=False)
    collect_rollouts("PSB/RandomObjects-v0", out, episodes=1, **settings)
    (out / "shard-00002.npz").write_bytes(b"someone else's")
    manifest = collect_rollouts("PSB/RandomObjects-v0", out, episodes=3, resume=True, **settings)
    assert (out / "shard-00002.npz").read_bytes() == b"someone else's"  # neither deleted nor overwritten
    assert [e["file"] for e in manifest["shards"]] == ["shard-00000.npz", "shard-00001.npz", "shard-00003.npz"]
    verify_rollouts(out)

"""Tests of agents/train_ppo.py and agents/evaluate.py (tiny PSB, a few hundred PPO steps)."""

from __future__ import annotations

import csv
import dataclasses
import json
import os
import re
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.vec_env import DummyVecEnv

from agents.evaluate import EvalArgs, evaluate
from agents.train_ppo import Args, parse_args, train
from psb_rl import PSBAutoencoder, PSBConfig, SlotTransformerExtractor, VecPSBWrapper, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]

TINY = {"image_size": 32, "num_slots": 4, "slot_dim": 32, "num_blocks": 1, "num_heads": 2, "window": 3}


def _builtin_envs() -> bool:
    try:
        import psb_rl  # noqa: F401  (registers PSB/ ids)
    except ImportError:
        return False
    return "PSB/OddOneOut-v0" in gym.registry


needs_envs = pytest.mark.skipif(not _builtin_envs(), reason="built-in PSB/ envs not available yet")


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from psb_rl import save_checkpoint

    torch.manual_seed(0)
    path = tmp_path_factory.mktemp("ckpt") / "psb.ckpt"
    save_checkpoint(PSBAutoencoder(PSBConfig(**TINY)), path)
    return path


def _tiny_args(tmp_path: Path, encoder: str, checkpoint: Path | None) -> Args:
    return Args(
        env="PSB/OddOneOut-v0",
        encoder=encoder,
        checkpoint=str(checkpoint) if checkpoint else None,
        n_envs=2,
        total_steps=256,
        n_steps=64,
        batch_size=64,
        n_epochs=1,
        eval_freq=128,
        eval_episodes=1,
        features_dim=32,
        d_model=32,
        num_layers=1,
        num_heads=2,
        out=str(tmp_path / encoder),
        device="cpu",
        progress_bar=False,
    )


@needs_envs
@pytest.mark.parametrize("encoder", ["slots", "pixels", "state"])
def test_train_each_encoder(tmp_path: Path, checkpoint: Path, encoder: str) -> None:
    result = train(_tiny_args(tmp_path, encoder, checkpoint if encoder == "slots" else None))
    assert result["timesteps"] >= 256
    assert 0.0 <= result["success_rate"] <= 1.0
    for key in ("model_path", "csv_path", "curve_path", "summary_path", "args_path"):
        assert Path(result[key]).is_file(), key
    assert Path(result["tensorboard_dir"]).is_dir()
    with open(result["csv_path"]) as f:
        rows = list(csv.DictReader(f))
    assert [int(r["timesteps"]) for r in rows] == [128, 256]
    assert json.loads(Path(result["summary_path"]).read_text())["encoder"] == encoder
    if encoder == "slots":
        out = evaluate(EvalArgs(run=result["out_dir"], episodes=1, gif_max_steps=6))
        assert out["episodes"] == 1 and 0.0 <= out["success_rate"] <= 1.0
        assert Path(out["gif_path"]).is_file()
    if encoder == "state":
        out = evaluate(EvalArgs(run=result["out_dir"], episodes=6, gif="none"))
        assert out["success_rate"] + out["failure_rate"] + out["timeout_rate"] == pytest.approx(1.0)
        # episode k is played from seed + k whatever the batching: one env at a time gives the same episodes
        one_at_a_time = evaluate(EvalArgs(run=result["out_dir"], episodes=6, gif="none", n_envs=1))
        assert one_at_a_time["returns"] == out["returns"] and one_at_a_time["lengths"] == out["lengths"]
        # OddOneOut ends an episode only by a touch (terminated) or the 100-step limit (truncated)
        # a time-out: 100 steps with no touch, return 100 × (-0.01); a touch at step 100 returns 0 or -1.1
        ended_by_limit = sum(
            1 for r, n in zip(out["returns"], out["lengths"], strict=True) if n == 100 and r == pytest.approx(-1.0)
        )
        assert out["timeout_rate"] == pytest.approx(ended_by_limit / 6)


@needs_envs
def test_anneal_lr_decays_the_learning_rate_linearly(tmp_path: Path) -> None:
    args = _tiny_args(tmp_path, "state", None)
    args.learning_rate, args.anneal_lr, args.eval_freq = 1e-3, True, 0
    result = train(args)
    agent = PPO.load(result["model_path"], device="cpu")
    assert [agent.lr_schedule(p) for p in (1.0, 0.5, 0.0)] == pytest.approx([1e-3, 5e-4, 0.0])
    # SB3 sets the rate from the progress after each rollout: the last update ran at the end of the line
    assert agent.policy.optimizer.param_groups[0]["lr"] == pytest.approx(0.0)
    assert parse_args(["--anneal-lr"]).anneal_lr is True and parse_args([]).anneal_lr is False


def _zip_tensors(model_path: str, name: str) -> dict:
    import io
    import zipfile

    with zipfile.ZipFile(model_path) as archive:
        return torch.load(io.BytesIO(archive.read(name)), weights_only=True)


@needs_envs
def test_load_agent_restores_weights_and_optimiser_without_unpickling(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cloudpickle

    from agents.train_ppo import load_agent

    args = _tiny_args(tmp_path, "state", None)
    args.eval_freq = 0
    result = train(args)

    def refuse(*_: object, **__: object) -> None:
        raise AssertionError("load_agent must not unpickle")

    monkeypatch.setattr(cloudpickle, "loads", refuse)
    agent = load_agent(result["model_path"], args, torch.device("cpu"))
    assert agent.num_timesteps == result["timesteps"] == 256
    saved = _zip_tensors(result["model_path"], "policy.pth")
    loaded = agent.policy.state_dict()
    assert saved.keys() == loaded.keys()
    assert all(torch.equal(saved[k], loaded[k]) for k in saved)
    saved_opt = _zip_tensors(result["model_path"], "policy.optimizer.pth")["state"]
    loaded_opt = agent.policy.optimizer.state_dict()["state"]
    assert saved_opt.keys() == loaded_opt.keys()
    assert all(torch.equal(saved_opt[k]["exp_avg"], loaded_opt[k]["exp_avg"]) for k in saved_opt)


@needs_envs
def test_resume_from_continues_to_total_steps_and_keeps_the_curve(tmp_path: Path) -> None:
    first_args = _tiny_args(tmp_path, "state", None)
    first = train(first_args)
    before = _zip_tensors(first["model_path"], "policy.pth")
    # continued into the same folder: the saved agent is read before it is (atomically) replaced
    second_args = _tiny_args(tmp_path, "state", None)
    second_args.total_steps, second_args.resume_from = 512, first["model_path"]
    second = train(second_args)
    assert second["model_path"] == first["model_path"]
    assert not [p.name for p in Path(first["out_dir"]).iterdir() if p.name.startswith(".")], "temporary files left"
    assert second["timesteps"] == 512 and second["resumed_from_steps"] == 256
    steps = [row["timesteps"] for row in second["curve"]]
    # the first run's evaluations (128, 256) come first, then the continued run's (384, 512)
    assert steps == [128, 256, 384, 512]
    assert second["curve"][:2] == pytest.approx(first["curve"][:2])
    after = _zip_tensors(second["model_path"], "policy.pth")
    assert any(not torch.equal(before[k], after[k]) for k in before), "the continued run did not train"


@needs_envs
def test_a_stopped_run_keeps_its_latest_agent(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agents import train_ppo

    args = _tiny_args(tmp_path, "state", None)
    args.save_freq = 128

    def stop(*_args, **_kwargs):
        raise KeyboardInterrupt  # stopped after the last rollout, before the final save

    monkeypatch.setattr(train_ppo, "evaluate_agent", stop)
    with pytest.raises(KeyboardInterrupt):
        train(args)
    model_path = Path(args.out) / "model.zip"
    assert train_ppo.saved_num_timesteps(model_path) == 256
    assert not [p.name for p in model_path.parent.iterdir() if p.name.startswith(".")], "temporary files left"
    monkeypatch.undo()
    resumed = train(dataclasses.replace(args, total_steps=384, resume_from=str(model_path)))
    assert resumed["resumed_from_steps"] == 256 and resumed["timesteps"] == 384


@needs_envs
def test_resume_from_errors(tmp_path: Path) -> None:
    args = _tiny_args(tmp_path, "state", None)
    args.eval_freq = 0
    model_path = train(args)["model_path"]
    done = _tiny_args(tmp_path, "state", None)
    done.out, done.resume_from = str(tmp_path / "again"), model_path
    with pytest.raises(ValueError, match=r"already trained 256 steps.*--total-steps"):
        train(done)
    other_net = _tiny_args(tmp_path, "state", None)
    other_net.out, other_net.resume_from, other_net.total_steps = str(tmp_path / "wider"), model_path, 512
    other_net.d_model = 64
    with pytest.raises(ValueError, match="--d-model 64 differs from the run's 32"):
        train(other_net)
    (Path(model_path).parent / "args.json").rename(tmp_path / "args.json")  # without its run's arguments
    with pytest.raises(ValueError, match="does not fit a network built from these arguments"):
        train(other_net)
    (tmp_path / "args.json").rename(Path(model_path).parent / "args.json")
    not_a_zip = tmp_path / "model.zip"
    not_a_zip.write_text("not an agent")
    other_net.resume_from, other_net.d_model = str(not_a_zip), 32
    with pytest.raises(ValueError, match=r"not an agent saved by agents/train_ppo\.py"):
        train(other_net)
    other_net.resume_from = str(tmp_path / "missing.zip")
    with pytest.raises(FileNotFoundError, match="no agent at"):
        train(other_net)


def test_slots_without_checkpoint_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--checkpoint"):
        train(_tiny_args(tmp_path, "slots", None))


def test_cli_parsing() -> None:
    args = parse_args(["--encoder", "state", "--n-envs", "3", "--no-tensorboard", "--learning-rate", "1e-3"])
    assert args.encoder == "state" and args.n_envs == 3 and args.tensorboard is False
    assert args.learning_rate == pytest.approx(1e-3)
    assert parse_args(["--checkpoint", "x.ckpt"]).checkpoint == "x.ckpt"
    assert parse_args(["--no-share-extractor"]).share_extractor is False
    from agents.train_ppo import policy_for

    relation_args = parse_args(["--encoder", "state", "--relation"])
    assert relation_args.relation is True and parse_args([]).relation is False
    assert policy_for(relation_args)[1]["features_extractor_kwargs"]["relation"] is True
    # evaluate.py: 'none' must reach the evaluator as the word (skip the GIF), not become the default path
    from agents.evaluate import parse_args as parse_eval_args

    assert parse_eval_args(["--gif", "none"]).gif == "none"
    assert parse_eval_args([]).gif == "auto"


@needs_envs
def test_separate_extractors_for_actor_and_critic() -> None:
    from agents.train_ppo import make_env, policy_for

    args = parse_args(["--encoder", "state", "--no-share-extractor", "--n-envs", "2", "--d-model", "16",
                       "--num-heads", "2", "--features-dim", "16"])
    policy, kwargs = policy_for(args)
    agent = PPO(policy, make_env(args, 2, seed=0), policy_kwargs=kwargs, n_steps=8, batch_size=8, device="cpu")
    assert agent.policy.pi_features_extractor is not agent.policy.vf_features_extractor
    assert isinstance(agent.policy.vf_features_extractor, SlotTransformerExtractor)


class _BlobEnv(gym.Env):
    """Tiny image env: a random square, reward for action 1, 8-step episodes."""

    observation_space = gym.spaces.Box(0, 255, (32, 32, 3), np.uint8)
    action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None):
        super().reset(seed=seed)
        self._t = 0
        return self._frame(), {}

    def _frame(self) -> np.ndarray:
        frame = np.zeros((32, 32, 3), np.uint8)
        x, y = self.np_random.integers(0, 24, 2)
        frame[y : y + 8, x : x + 8] = 255
        return frame

    def step(self, action: int):
        self._t += 1
        return self._frame(), float(action), self._t >= 8, False, {"is_success": bool(action)}


def test_frozen_encoder_stays_frozen_through_ppo(checkpoint: Path) -> None:
    model = load_checkpoint(checkpoint)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    venv = VecPSBWrapper(DummyVecEnv([_BlobEnv, _BlobEnv]), checkpoint=model)
    agent = PPO(
        "MlpPolicy",
        venv,
        n_steps=32,
        batch_size=32,
        n_epochs=2,
        learning_rate=1e-2,
        seed=0,
        device="cpu",
        policy_kwargs={
            "features_extractor_class": SlotTransformerExtractor,
            "features_extractor_kwargs": {"features_dim": 16, "d_model": 16, "num_heads": 2, "num_layers": 1},
        },
    )
    agent.learn(128)
    assert agent.num_timesteps >= 128
    assert not model.training
    assert all(not p.requires_grad for p in model.parameters())
    after = model.state_dict()
    assert before.keys() == after.keys()
    for key, value in before.items():
        assert torch.equal(value, after[key]), key
    # the encoder is not part of the policy (ortho_init / set_training_mode cannot reach it)
    policy_params = {id(p) for p in agent.policy.parameters()}
    assert not policy_params & {id(p) for p in model.parameters()}


def _run_cli(script: str, *argv: str) -> subprocess.CompletedProcess:
    from psb_rl.utils import child_pythonpath

    env = {**os.environ, "PYTHONPATH": child_pythonpath(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, script, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=180)


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


@needs_envs
def test_a_swapped_checkpoint_is_refused_naming_both(tmp_path: Path, checkpoint: Path) -> None:
    from psb_rl import save_checkpoint
    from psb_rl.agent_io import build_agent, run_record
    from psb_rl.checkpoint import CheckpointError, file_sha256
    from psb_rl.utils import write_json

    args = _tiny_args(tmp_path, "slots", checkpoint)
    run = Path(args.out)
    run.mkdir(parents=True)
    space = gym.spaces.Box(-np.inf, np.inf, (TINY["num_slots"], TINY["slot_dim"]), np.float32)
    build_agent(args, (space, gym.spaces.Discrete(5)), "cpu").save(run / "model.zip")
    write_json(run / "args.json", run_record(args))
    record = json.loads((run / "args.json").read_text())
    assert record["checkpoint_sha256"] == file_sha256(checkpoint)
    assert record["checkpoint_config"]["slot_dim"] == TINY["slot_dim"]
    evaluate(EvalArgs(run=str(run), episodes=1, gif="none"))  # its own checkpoint: fine

    torch.manual_seed(1)  # same shape, other weights
    other = save_checkpoint(PSBAutoencoder(PSBConfig(**TINY)), tmp_path / "other.ckpt")
    with pytest.raises(CheckpointError, match=rf"other\.ckpt .*is not the PSB checkpoint the agent in {run} was "
                                               rf"trained with \({checkpoint}"):
        evaluate(EvalArgs(run=str(run), checkpoint=str(other), episodes=1, gif="none"))
    line = _one_error_line(_run_cli("agents/evaluate.py", "--run", str(run), "--checkpoint", str(other),
                                    "--episodes", "1", "--gif", "none"))
    assert str(other) in line and str(checkpoint) in line
    resumed = dataclasses.replace(args, checkpoint=str(other), resume_from=str(run / "model.zip"),
                                  out=str(tmp_path / "continued"), total_steps=512)
    with pytest.raises(CheckpointError, match=r"other\.ckpt"):
        train(resumed)


def test_ppo_run_folder_is_owned(tmp_path: Path) -> None:
    from psb_rl.utils import RunDirError, run_lock

    args = _tiny_args(tmp_path, "state", None)
    Path(args.out).mkdir(parents=True)
    (Path(args.out) / "model.zip").write_text("an earlier agent")
    with pytest.raises(RunDirError, match=r"already holds a run \(model\.zip\).*--resume-from.*--overwrite"):
        train(args)
    assert (Path(args.out) / "model.zip").read_text() == "an earlier agent"
    line = _one_error_line(_run_cli("agents/train_ppo.py", "--encoder", "state", "--out", args.out))
    assert "--overwrite" in line
    with run_lock(args.out), pytest.raises(RunDirError, match=rf"pid {os.getpid()}"):
        train(dataclasses.replace(args, overwrite=True))
    assert (Path(args.out) / "model.zip").read_text() == "an earlier agent"


def test_cli_mistakes_are_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from agents import evaluate as evaluate_script
    from agents import train_ppo
    from psb_rl.cli import run_main

    def one_line() -> str:
        err = capsys.readouterr().err
        assert err.count("\n") == 1 and err.startswith("error: ") and "Traceback" not in err, err
        return err

    assert run_main(train_ppo.main, ["--encoder", "slots"]) == 2 and "--checkpoint" in one_line()
    assert run_main(evaluate_script.main, ["--run", "/nonexistent/run"]) == 2 and "no agent at" in one_line()
    for argv, expected in ((["--encoder", "slotz"], "'slots', 'pixels', 'state'"), (["--pooling", "mean"], "'deepsets'")):
        with pytest.raises(SystemExit) as exit_info:
            run_main(train_ppo.main, argv)
        err = one_line()
        assert exit_info.value.code == 2 and "invalid choice" in err and expected in err
    with pytest.raises(SystemExit):
        evaluate_script.parse_args(["--help"])
    text = capsys.readouterr().out
    options = re.split(r"\n  (?=-)", text.split("options:", 1)[1])
    assert len(options) > 10 and all(option.count("(default") <= 1 for option in options), text  # shown once
    assert "{slots,pixels,state}" in text
# ---------------------------------------------------------------------------------------------- real environments
needs_ale = pytest.mark.skipif(__import__("importlib").util.find_spec("ale_py") is None, reason="ale-py not installed")


def _real_env_checkpoint(path: Path, image_size, pipeline) -> Path:
    from psb_rl import save_checkpoint

    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(**{**TINY, "image_size": image_size}))
    model.frame_pipeline = pipeline  # as pretraining on that env's rollouts records it
    save_checkpoint(model, path)
    return path


def _real_env_args(tmp_path: Path, env: str, encoder: str, checkpoint: Path | None, **overrides) -> Args:
    args = dataclasses.replace(_tiny_args(tmp_path, encoder, checkpoint), env=env, total_steps=128, n_steps=32,
                               eval_freq=0, tensorboard=False, max_episode_steps=40)
    return dataclasses.replace(args, **overrides)


def test_train_slots_on_minigrid_render_frames(tmp_path: Path) -> None:
    from psb_rl.frames import FramePipeline

    pipeline = FramePipeline(source="render", size=(32, 32), input_size=(40, 40))  # DoorKey-5x5: 5 tiles of 8 px
    checkpoint = _real_env_checkpoint(tmp_path / "psb.ckpt", 32, pipeline)
    result = train(_real_env_args(tmp_path, "MiniGrid-DoorKey-5x5-v0", "slots", checkpoint, n_envs=1, total_steps=64,
                                  n_steps=64, max_episode_steps=20, env_kwargs='{"tile_size": 8}'))
    assert result["timesteps"] >= 64 and np.isfinite(result["mean_reward"])
    out = evaluate(EvalArgs(run=result["out_dir"], episodes=1, gif="none"))  # the same env is rebuilt
    assert out["episodes"] == 1 and out["encoder"] == "slots"


def test_train_pixels_on_minigrid_renders_when_observations_are_not_images(tmp_path: Path) -> None:
    from agents.train_ppo import make_env

    args = _real_env_args(tmp_path, "MiniGrid-Empty-5x5-v0", "pixels", None, resize=[40])
    venv = make_env(args, 1, 0)
    assert venv.observation_space.shape == (3, 40, 40)  # env.render() frames, resized, channels-first for the CNN
    venv.close()
    assert train(args)["timesteps"] >= 128


@needs_ale
@pytest.mark.parametrize("encoder", ["slots", "pixels"])
def test_train_on_pong_with_the_atari_wrappers_in_rgb(tmp_path: Path, encoder: str) -> None:
    from agents.train_ppo import make_env
    from psb_rl.frames import FramePipeline

    pipeline = FramePipeline(crop=(34, 16, 0, 0), size=(48, 40), input_size=(210, 160))  # playfield, non-square
    checkpoint = _real_env_checkpoint(tmp_path / "psb.ckpt", (48, 40), pipeline)
    args = _real_env_args(tmp_path, "ALE/Pong-v5", encoder, checkpoint, n_envs=1, total_steps=64, n_steps=64)
    model = load_checkpoint(checkpoint)
    venv = make_env(args, 1, 0, model if encoder == "slots" else None)
    if encoder == "slots":
        assert venv.frame_pipeline == pipeline and venv.observation_space.shape == (4, 32)
    else:
        assert venv.observation_space.shape == (3, 48, 40)  # the checkpoint's pipeline: crop + resize
    venv.close()
    assert train(args)["timesteps"] >= 64


def test_unknown_env_id_is_one_line_naming_the_fix(tmp_path: Path) -> None:
    import subprocess

    from psb_rl.utils import child_pythonpath

    env = {"PYTHONPATH": child_pythonpath(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    result = subprocess.run([sys.executable, "agents/train_ppo.py", "--env", "MiniGrid-Nope-v0", "--encoder", "pixels",
                             "--out", str(tmp_path / "run")], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown environment id 'MiniGrid-Nope-v0'")
    assert "--gym-packages" in lines[0]


def test_continued_run_hides_the_steps_logged_after_the_saved_agent(tmp_path: Path) -> None:
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
    from torch.utils.tensorboard import SummaryWriter

    from agents.train_ppo import mark_tensorboard_restart

    mark_tensorboard_restart(tmp_path, "ppo_slots", 6)  # no earlier log: nothing written
    assert not any(tmp_path.iterdir())
    first = SummaryWriter(str(tmp_path / "ppo_slots_1"))  # the interrupted run logged steps 0-9
    for step in range(10):
        first.add_scalar("rollout/ep_rew_mean", float(step), step)
    first.close()
    mark_tensorboard_restart(tmp_path, "ppo_slots", 6)  # its saved agent had trained 6 steps
    events = [event for path in sorted((tmp_path / "ppo_slots_1").iterdir())
              for event in EventFileLoader(str(path)).Load()]
    restarts = [event.step for event in events
                if event.HasField("session_log") and event.session_log.status == event.session_log.START]
    assert restarts == [6]  # TensorBoard drops the first run's steps >= 6 on this marker
    assert sorted((tmp_path).iterdir()) == [tmp_path / "ppo_slots_1"]  # SB3 continues in that same folder


# ---------------------------------------------------------------------------------------------- slot agents' inputs


@needs_envs
def test_slot_geometry_and_standardized_slots_train_save_and_reload(tmp_path: Path, checkpoint: Path) -> None:
    from agents.train_ppo import load_agent
    from psb_rl.agent_io import load_agent_policy
    from psb_rl.model import GEOMETRY_FEATURES

    args = dataclasses.replace(_tiny_args(tmp_path, "slots", checkpoint), slot_geometry=True, standardize=True,
                               standardize_samples=200)
    result = train(args)
    assert result["timesteps"] >= 256
    agent = load_agent(result["model_path"], args, torch.device("cpu"))
    extractor = agent.policy.features_extractor
    assert extractor.standardizer.count.item() == 200  # estimated from the first observations, then fixed
    assert agent.observation_space.shape == (TINY["num_slots"], TINY["slot_dim"] + len(GEOMETRY_FEATURES))
    out = evaluate(EvalArgs(run=result["out_dir"], episodes=1, gif="none"))  # the env is rebuilt with geometry
    assert out["episodes"] == 1
    env = gym.make("PSB/OddOneOut-v0")
    policy = load_agent_policy(result["model_path"], env.observation_space, env.action_space)
    frames = np.stack([env.reset(seed=s)[0] for s in range(2)])
    assert policy(frames).shape == (2,)  # raw frames in: streamed, geometry appended, actions out
    assert extractor.standardizer.count.item() == 200


@needs_envs
def test_geometry_only_agent_trains_and_reloads_with_the_geometry_alone(tmp_path: Path, checkpoint: Path) -> None:
    from psb_rl.agent_io import load_agent_policy
    from psb_rl.model import GEOMETRY_FEATURES

    args = dataclasses.replace(_tiny_args(tmp_path, "slots", checkpoint), geometry_only=True)
    result = train(args)
    env = gym.make("PSB/OddOneOut-v0")
    policy = load_agent_policy(result["model_path"], env.observation_space, env.action_space)
    assert policy.agent.observation_space.shape == (TINY["num_slots"], len(GEOMETRY_FEATURES))
    frames = np.stack([env.reset(seed=s)[0] for s in range(2)])
    assert policy(frames).shape == (2,)
    assert evaluate(EvalArgs(run=result["out_dir"], episodes=1, gif="none"))["episodes"] == 1


@needs_envs
def test_slot_geometry_cannot_be_mirrored(tmp_path: Path, checkpoint: Path) -> None:
    args = dataclasses.replace(_tiny_args(tmp_path, "slots", checkpoint), slot_geometry=True, mirror_from=0)
    with pytest.raises(ValueError, match="slot-geometry"):
        train(args)


def test_state_agent_on_minigrid_reads_the_symbolic_grid(tmp_path: Path) -> None:
    from agents.train_ppo import make_env

    args = _real_env_args(tmp_path, "MiniGrid-DoorKey-5x5-v0", "state", None, n_envs=1, total_steps=64, n_steps=64)
    venv = make_env(args, 1, 0)
    assert venv.observation_space.shape == (25, venv.observation_space.shape[1])
    venv.close()
    result = train(args)
    assert result["timesteps"] >= 64
    assert evaluate(EvalArgs(run=result["out_dir"], episodes=1, gif="none"))["episodes"] == 1


def test_net_arch_sets_the_heads_on_the_features() -> None:
    from psb_rl.agent_io import policy_for

    default = parse_args(["--encoder", "state"])
    assert "net_arch" not in policy_for(default)[1]  # SB3's default heads
    linear = parse_args(["--encoder", "state", "--net-arch"])
    assert linear.net_arch == [] and policy_for(linear)[1]["net_arch"] == []
    wide = parse_args(["--encoder", "slots", "--net-arch", "256"])
    assert policy_for(wide)[1]["net_arch"] == [256]
    assert policy_for(parse_args(["--encoder", "pixels"]))[1] == {}  # the CNN keeps its defaults


@needs_envs
def test_linear_heads_read_the_extractor_features_directly(tmp_path: Path) -> None:
    from agents.train_ppo import load_agent

    args = dataclasses.replace(_tiny_args(tmp_path, "state", None), net_arch=[])
    result = train(args)
    agent = load_agent(result["model_path"], args, torch.device("cpu"))
    assert agent.policy.action_net.in_features == args.features_dim
    assert not any(isinstance(m, torch.nn.Linear) for m in agent.policy.mlp_extractor.modules())


def test_agents_make_the_env_with_the_checkpoints_rendering_options(tmp_path: Path) -> None:
    """MiniGrid pretrained with highlight=False: the agent's envs (training, evaluation, collection with the agent)
    are made with it; --env-kwargs overrides it and the run records what the envs were made with."""
    import warnings

    from agents.evaluate import make_acting_env, run_train_args
    from agents.train_ppo import make_env
    from psb_rl.agent_io import agent_env_kwargs
    from psb_rl.frames import FramePipeline
    from psb_rl.wrappers import RenderingOptionWarning

    pipeline = FramePipeline(source="render", size=(32, 32), input_size=(40, 40), env_kwargs={"highlight": False})
    checkpoint = _real_env_checkpoint(tmp_path / "psb.ckpt", 32, pipeline)
    args = _real_env_args(tmp_path, "MiniGrid-DoorKey-5x5-v0", "slots", checkpoint, n_envs=1, total_steps=64,
                          n_steps=64, max_episode_steps=20, env_kwargs='{"tile_size": 8}')
    model = load_checkpoint(checkpoint)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenderingOptionWarning)
        venv = make_env(args, 1, 0, model)
    assert venv.get_attr("highlight") == [False]
    venv.close()
    overridden = dataclasses.replace(args, env_kwargs='{"tile_size": 8, "highlight": true}')
    with pytest.warns(RenderingOptionWarning, match="highlight=True"):  # explicit, so the wrapper says so
        venv = make_env(overridden, 1, 0, model)
    assert venv.get_attr("highlight") == [True]
    venv.close()

    result = train(args)
    assert json.loads(Path(result["summary_path"]).read_text())["env_kwargs"] == {"highlight": False, "tile_size": 8}
    env = make_acting_env(run_train_args(EvalArgs(run=result["out_dir"])))
    assert env.unwrapped.highlight is False
    env.close()
    assert agent_env_kwargs(result["model_path"]) == {"highlight": False, "tile_size": 8}  # collect --policy


def test_a_pixel_agent_on_render_frames_collects_rollouts(tmp_path: Path) -> None:
    from psb_rl.rollouts import collect_rollouts

    args = _real_env_args(tmp_path, "MiniGrid-Empty-5x5-v0", "pixels", None, resize=[40], pixels="render")
    run = train(args)
    manifest = collect_rollouts("MiniGrid-Empty-5x5-v0", tmp_path / "agent_rollouts", episodes=2, num_envs=2,
                                policy=run["model_path"], pixels="render", resize=40, max_episode_steps=10,
                                progress=False)
    assert manifest["num_episodes"] == 2 and manifest["frame_shape"] == [40, 40, 3]


@needs_envs
def test_a_raw_pickle_in_the_agent_zip_is_one_line_without_torch_warnings(tmp_path: Path) -> None:
    import pickle
    import zipfile

    from psb_rl.agent_io import build_agent, run_record
    from psb_rl.utils import write_json

    args = _tiny_args(tmp_path, "state", None)
    run = Path(args.out)
    run.mkdir(parents=True)
    env = gym.make("PSB/OddOneOut-v0", obs_mode="state")
    build_agent(args, (env.observation_space, env.action_space), "cpu").save(run / "clean.zip")
    write_json(run / "args.json", run_record(args))
    with zipfile.ZipFile(run / "clean.zip") as source, zipfile.ZipFile(run / "model.zip", "w") as target:
        for item in source.infolist():
            data = source.read(item.filename)
            target.writestr(item, pickle.dumps({"policy": 1}) if item.filename == "policy.pth" else data)
    line = _one_error_line(_run_cli("agents/evaluate.py", "--run", str(run), "--episodes", "1", "--gif", "none"))
    assert "not plain tensors" in line and "weights_only" not in line


def test_resuming_in_place_with_another_network_keeps_the_runs_record(tmp_path: Path) -> None:
    args = dataclasses.replace(_tiny_args(tmp_path, "state", None), eval_freq=0)
    run = train(args)
    record_path = Path(run["out_dir"]) / "args.json"
    record = json.loads(record_path.read_text())
    del record["net_arch"]  # a run recorded before the field existed: it had the default heads
    record_path.write_text(json.dumps(record))
    linear = dataclasses.replace(args, resume_from=run["model_path"], total_steps=512, net_arch=[])
    with pytest.raises(ValueError, match=r"--net-arch \[\] differs from the run's None"):
        train(linear)
    wider = dataclasses.replace(args, resume_from=run["model_path"], total_steps=512, features_dim=48)
    record_path.write_text(json.dumps({k: v for k, v in record.items() if k != "features_dim"}))
    before = record_path.read_bytes()
    with pytest.raises(ValueError, match="does not fit"):
        train(wider)  # found only when the agent is loaded: the run's record is left as it was
    assert record_path.read_bytes() == before

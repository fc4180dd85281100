"""agents/rl_zoo_psb.yml: RL Zoo trains PPO on PSB slots (wrapper + slot extractor) and rebuilds the wrapper on reload."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

rl_zoo3 = pytest.importorskip("rl_zoo3")
yaml = pytest.importorskip("yaml")

ROOT = Path(__file__).resolve().parents[1]
ENV_ID = "MiniGrid-DoorKey-5x5-v0"

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_policy_kwargs_evaluate_in_rl_zoo_module() -> None:
    """RL Zoo evaluates policy_kwargs in its own module, where psb_rl is not imported."""
    import rl_zoo3.exp_manager as exp_manager

    from psb_rl import SlotTransformerExtractor

    conf = yaml.safe_load((ROOT / "agents" / "rl_zoo_psb.yml").read_text())
    for entry in conf.values():
        kwargs = eval(entry["policy_kwargs"], vars(exp_manager))  # as rl_zoo3.exp_manager does
        assert kwargs["features_extractor_class"] is SlotTransformerExtractor


def test_rl_zoo_trains_and_reload_rebuilds_the_wrapper(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from rl_zoo3 import create_test_env, get_saved_hyperparams
    from rl_zoo3.train import train as zoo_train
    from stable_baselines3 import PPO

    from psb_rl import PSBAutoencoder, PSBConfig, PSBObservationWrapper, save_checkpoint
    from psb_rl.frames import FramePipeline

    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(image_size=32, num_slots=4, slot_dim=32, num_blocks=1, num_heads=2, window=3))
    model.frame_pipeline = FramePipeline(source="render", size=(32, 32), input_size=(40, 40))  # 5 tiles of 8 px
    checkpoint = save_checkpoint(model, tmp_path / "psb.ckpt")
    conf = yaml.safe_load((ROOT / "agents" / "rl_zoo_psb.yml").read_text())
    entry = conf[ENV_ID]
    entry["env_wrapper"][0]["psb_rl.PSBObservationWrapper"]["checkpoint"] = str(checkpoint)
    entry.setdefault("env_kwargs", {})["tile_size"] = 8
    entry.update(n_timesteps=128, n_envs=2, n_steps=64, batch_size=64, n_epochs=1)
    (tmp_path / "conf.yml").write_text(yaml.safe_dump({ENV_ID: entry}))

    logs = tmp_path / "logs"
    monkeypatch.setattr(sys, "argv", ["rl_zoo3.train", "--algo", "ppo", "--env", ENV_ID, "--conf-file",
                                      str(tmp_path / "conf.yml"), "-f", str(logs), "--eval-freq", "-1", "--seed", "0",
                                      "--num-threads", "1", "--verbose", "0"])
    zoo_train()
    run = logs / "ppo" / f"{ENV_ID}_1"
    saved = run / f"{ENV_ID}.zip"
    assert saved.is_file()

    # the reload path of rl_zoo3.enjoy: hyperparameters saved with the run rebuild the same wrapped env
    hyperparams, stats_path = get_saved_hyperparams(str(run / ENV_ID), test_mode=True)
    env = create_test_env(ENV_ID, n_envs=1, stats_path=stats_path, seed=0, log_dir=None, should_render=False,
                          hyperparams=hyperparams, env_kwargs={"render_mode": "rgb_array", "tile_size": 8})
    wrapper = env.envs[0]
    while not isinstance(wrapper, PSBObservationWrapper):
        wrapper = wrapper.env
    assert wrapper.frame_pipeline == model.frame_pipeline
    obs = env.reset()
    assert obs.shape == (1, 4, 32) and obs.dtype == np.float32
    # the saved policy fits a policy built from the saved hyperparameters (weights read without unpickling)
    import rl_zoo3.exp_manager as exp_manager

    agent = PPO("MlpPolicy", env, policy_kwargs=eval(hyperparams["policy_kwargs"], vars(exp_manager)), device="cpu")
    agent.set_parameters(str(saved), exact_match=True, device="cpu")
    action, _ = agent.predict(obs, deterministic=True)
    assert env.action_space.contains(int(action[0]))
    env.close()


def readme_rl_zoo_lines() -> list[list[str]]:
    """The RL Zoo commands of the README, as printed (argv lists)."""
    text = (ROOT / "README.md").read_text()
    return [shlex.split(line) for line in re.findall(r"^python -m rl_zoo3\.\w+ .*$", text, flags=re.M)]


def _zoo_checkpoints(root: Path) -> None:
    """Tiny checkpoints at the paths agents/rl_zoo_psb.yml names, as train_psb.py would write them."""
    from psb_rl import PSBAutoencoder, PSBConfig, save_checkpoint
    from psb_rl.frames import FramePipeline

    conf = yaml.safe_load((ROOT / "agents" / "rl_zoo_psb.yml").read_text())
    tiny = {"num_slots": 4, "slot_dim": 32, "num_blocks": 1, "num_heads": 2, "window": 3}
    torch.manual_seed(0)
    for env_id, entry in conf.items():
        path = root / entry["env_wrapper"][0]["psb_rl.PSBObservationWrapper"]["checkpoint"]
        path.parent.mkdir(parents=True, exist_ok=True)
        if env_id.startswith("MiniGrid"):  # the minigrid preset: render() without the highlight, 8 px per cell
            model = PSBAutoencoder(PSBConfig(image_size=40, feature_stride=8, decoder_grid=5, **tiny))
            model.frame_pipeline = FramePipeline(source="render", size=(40, 40), input_size=(160, 160),
                                                 env_kwargs={"highlight": False})
        else:  # the default run: PSB/RandomObjects-v0 observations
            model = PSBAutoencoder(PSBConfig(image_size=32, **tiny))
        save_checkpoint(model, path)


def test_readme_rl_zoo_lines_run_as_printed(tmp_path: Path) -> None:
    """Train and enjoy, for a built-in env and a MiniGrid env, exactly as the README prints them (only -n is
    appended, to keep the runs tiny), from a folder laid out like the repository."""
    lines = readme_rl_zoo_lines()
    modules = {(argv[2], argv[argv.index("--env") + 1]) for argv in lines}
    assert {("rl_zoo3.train", "PSB/OddOneOut-v0"), ("rl_zoo3.enjoy", "PSB/OddOneOut-v0"),
            ("rl_zoo3.train", ENV_ID), ("rl_zoo3.enjoy", ENV_ID)} <= modules
    (tmp_path / "agents").symlink_to(ROOT / "agents")
    _zoo_checkpoints(tmp_path)
    environ = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    for argv in lines:
        assert argv[:2] == ["python", "-m"]
        command = [sys.executable, *argv[1:], "-n", "16" if argv[2] == "rl_zoo3.enjoy" else "64"]
        result = subprocess.run(command, cwd=tmp_path, env=environ, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, f"{' '.join(argv)}\n{result.stdout[-2000:]}\n{result.stderr[-3000:]}"
        assert "RenderingOptionWarning" not in result.stderr
    assert (tmp_path / "logs" / "ppo" / f"{ENV_ID}_1" / f"{ENV_ID}.zip").is_file()

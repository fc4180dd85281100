"""psb_rl.environments: ids registered on demand, one-line errors for unknown ids, render and Atari frames."""

from __future__ import annotations

import importlib.util
import subprocess
import sys
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest

from psb_rl.environments import (
    FramePipelineObservation,
    UnknownEnvError,
    atari_wrappers,
    ensure_registered,
    make_env,
    make_frame_env,
)
from psb_rl.frames import FramePipeline
from psb_rl.utils import child_pythonpath

ROOT = Path(__file__).resolve().parents[1]
needs_ale = pytest.mark.skipif(importlib.util.find_spec("ale_py") is None, reason="ale-py not installed")


@pytest.mark.parametrize("env_id", ["PSB/RandomObjects-v0", "MiniGrid-Empty-5x5-v0", "BabyAI-GoToRedBall-v0",
                                    "CartPole-v1", "psb_rl:PSB/OddOneOut-v0"])
def test_known_namespaces_register_on_demand(env_id: str) -> None:
    ensure_registered(env_id)
    make_env(env_id).close()


@needs_ale
def test_ale_ids_register_on_demand() -> None:
    ensure_registered("ALE/Pong-v5")
    assert "ALE/Pong-v5" in gym.registry


def test_unknown_id_names_the_fix() -> None:
    with pytest.raises(UnknownEnvError, match=r"unknown environment id 'Nope-v0'.*--gym-packages PKG") as error:
        ensure_registered("Nope-v0")
    assert "\n" not in str(error.value)
    with pytest.raises(UnknownEnvError, match="--gym-packages not_a_package: cannot import it"):
        ensure_registered("Nope-v0", gym_packages=["not_a_package"])


def test_gym_packages_are_imported_first(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "my_envs_pkg.py").write_text(
        "import gymnasium as gym\n"
        "gym.register('MyPkg/Corridor-v0', entry_point='gymnasium.envs.classic_control:CartPoleEnv')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.raises(UnknownEnvError):
        ensure_registered("MyPkg/Corridor-v0")
    ensure_registered("MyPkg/Corridor-v0", gym_packages=["my_envs_pkg"])


def test_render_frames_become_observations() -> None:
    env = make_frame_env("MiniGrid-Empty-5x5-v0", source="render", env_kwargs={"tile_size": 8})
    obs, _ = env.reset(seed=0)
    assert env.observation_space.shape == (40, 40, 3) and obs.shape == (40, 40, 3) and obs.dtype == np.uint8
    pixels = FramePipelineObservation(env, FramePipeline(size=(16, 20)))
    assert pixels.observation_space.shape == (16, 20, 3) and pixels.reset(seed=0)[0].shape == (16, 20, 3)


@needs_ale
def test_atari_wrappers_keep_rgb_frames() -> None:
    env = atari_wrappers(make_env("ALE/Pong-v5", max_episode_steps=30))
    obs, _ = env.reset(seed=0)
    assert obs.shape == (210, 160, 3) and obs.dtype == np.uint8
    _, reward, *_ = env.step(0)
    assert reward in (-1.0, 0.0, 1.0)
    env.close()


@pytest.mark.parametrize("script", ["pretrain/collect_rollouts.py", "pretrain/train_psb.py"])
def test_clis_print_one_line_for_an_unknown_id(tmp_path: Path, script: str) -> None:
    env = {"PYTHONPATH": child_pythonpath(ROOT), "OMP_NUM_THREADS": "1", "PATH": "/usr/bin:/bin"}
    argv = ["--env", "MiniGridd-Empty-8x8-v0"]
    argv += ["--out", str(tmp_path / "data")] if "collect" in script else ["--data", str(tmp_path / "data"),
                                                                             "--out", str(tmp_path / "run")]
    result = subprocess.run([sys.executable, script, *argv], cwd=ROOT, env=env, capture_output=True, text=True,
                            timeout=120)
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: unknown environment id 'MiniGridd-Empty-8x8-v0'"), lines


def _doorkey_solution(env: gym.Env) -> list[int]:
    """Actions that solve the current DoorKey-5x5 layout: a breadth-first search over (position, direction,
    key carried, door open) with MiniGrid's own step function on copies of the env."""
    import copy
    from collections import deque

    def state(e: gym.Env) -> tuple:
        u = e.unwrapped
        door = next(c for c in u.grid.grid if c is not None and c.type == "door")
        return (*map(int, u.agent_pos), u.agent_dir, u.carrying is not None, door.is_open)

    queue, seen = deque([(copy.deepcopy(env), [])]), {state(env)}
    while queue:
        current, actions = queue.popleft()
        for action in (0, 1, 2, 3, 5):  # left, right, forward, pickup, toggle
            child = copy.deepcopy(current)
            _, reward, terminated, _, _ = child.step(action)
            if terminated and reward > 0:
                return [*actions, action]
            if not terminated and state(child) not in seen:
                seen.add(state(child))
                queue.append((child, [*actions, action]))
    raise AssertionError("no solution found")


def test_minigrid_success_is_a_positive_terminal_reward() -> None:
    env = make_frame_env("MiniGrid-DoorKey-5x5-v0", "render", {"highlight": False}, max_episode_steps=6)
    env.reset(seed=0)
    infos = [env.step(0)[-1] for _ in range(6)]  # turning in place until the time limit: no success
    assert "is_success" not in infos[0] and infos[-1]["is_success"] is False
    solved = make_frame_env("MiniGrid-DoorKey-5x5-v0", "render", {"highlight": False})
    solved.reset(seed=3)
    for action in _doorkey_solution(solved.unwrapped):
        _, reward, terminated, _truncated, info = solved.step(action)
    assert terminated and reward > 0 and info["is_success"] is True


def test_minigrid_objects_encode_the_full_grid() -> None:
    from minigrid.core.constants import OBJECT_TO_IDX

    from psb_rl.environments import MiniGridObjects, make_state_env

    env = make_state_env("MiniGrid-DoorKey-5x5-v0")
    assert isinstance(env, MiniGridObjects)
    obs, _ = env.reset(seed=0)
    assert env.observation_space.contains(obs) and obs.shape[0] == 25
    unwrapped = env.unwrapped
    x, y = map(int, unwrapped.agent_pos)
    agent_row = obs[x * unwrapped.height + y]
    kinds = len(OBJECT_TO_IDX)
    assert agent_row[OBJECT_TO_IDX["agent"]] == 1.0
    direction = agent_row[kinds + 6 + 3: kinds + 6 + 3 + 4]
    assert direction.argmax() == unwrapped.agent_dir and direction.sum() == 1.0
    assert {int(r[:kinds].argmax()) for r in obs if r[-1] == 1.0} >= {OBJECT_TO_IDX[k] for k in ("wall", "key", "door", "goal")}
    assert all(r[:kinds].argmax() == OBJECT_TO_IDX["empty"] for r in obs if r[-1] == 0.0)
    obs, *_ = env.step(0)  # turn left: only the direction changes
    assert obs[x * unwrapped.height + y][kinds + 9: kinds + 13].argmax() == unwrapped.agent_dir


def test_state_env_without_object_states_is_one_line() -> None:
    from psb_rl.environments import make_state_env

    with pytest.raises(ValueError, match="object states"):
        make_state_env("CartPole-v1")

"""Tests of the scripted reference policies for PSB/OddOneOut-v0 (psb_rl/envs/scripted.py)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest

import psb_rl  # noqa: F401  (registers PSB/ ids)
from psb_rl.envs.object_envs import OddOneOutEnv
from psb_rl.envs.scripted import (
    POLICIES,
    colour_pair,
    evaluate_scripted,
    scripted_action,
    straight_line_succeeds,
)
from psb_rl.envs.sprites import COLOR_NAMES


def _placed_env(positions: list[tuple[float, float]]) -> OddOneOutEnv:
    """An OddOneOut env (64 px, 3 still objects, odd one = object 1) with hand-placed objects."""
    env: OddOneOutEnv = gym.make("PSB/OddOneOut-v0", obs_mode="state", num_objects=3).unwrapped  # type: ignore[assignment]
    env.reset(seed=0)
    env.pos = np.asarray(positions, dtype=np.float64)
    env.vel = np.zeros_like(env.pos)
    env.odd_index = 1
    return env


def test_greedy_walks_straight_at_the_target() -> None:
    env = _placed_env([(10, 32), (50, 32), (30, 5), (30, 59)])
    assert scripted_action(env, 1, avoid=False) == 4  # right
    env = _placed_env([(32, 50), (32, 10), (5, 30), (59, 30)])
    assert scripted_action(env, 1, avoid=False) == 1  # up


def test_avoid_steps_around_an_object_in_the_way() -> None:
    # object 2 sits right next to the agent, between it and the target
    env = _placed_env([(20, 32), (55, 32), (31, 32), (5, 5)])
    assert scripted_action(env, 1, avoid=False) == 4  # straight on: into object 2
    action = scripted_action(env, 1, avoid=True)
    assert action in (1, 2)  # sideways, around it
    env.step(action)
    assert not env._overlaps(0, 2)


def test_avoid_reaches_the_target_more_often_than_greedy() -> None:
    crowded = {"agent_start": "random", "spacing": 2.0}  # the layout where straight walks brush others
    greedy = evaluate_scripted("greedy", episodes=60, seed=3, **crowded)
    avoid = evaluate_scripted("avoid", episodes=60, seed=3, **crowded)
    blind = evaluate_scripted("avoid_random_target", episodes=60, seed=3, **crowded)
    for row in (greedy, avoid, blind):
        total = row["success_rate"] + row["wrong_object_rate"] + row["timeout_rate"]
        assert total == pytest.approx(1.0)
    assert avoid["success_rate"] > greedy["success_rate"]
    assert avoid["success_rate"] > blind["success_rate"] + 0.3  # identification is worth a lot
    assert greedy["timeout_rate"] == 0.0  # a straight line always touches something within 100 steps


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="policy must be one of"):
        evaluate_scripted("oracle", episodes=1)
    with pytest.raises(ValueError, match="episodes must be"):
        evaluate_scripted(POLICIES[0], episodes=0)


def test_straight_line_succeeds_matches_the_greedy_policy_and_leaves_the_env_untouched() -> None:
    env = gym.make("PSB/OddOneOut-v0", obs_mode="state")
    core: OddOneOutEnv = env.unwrapped  # type: ignore[assignment]
    outcomes = []
    for seed in range(30):
        env.reset(seed=seed)
        before = (core.pos.copy(), core.vel.copy(), core.np_random.bit_generator.state)
        outcomes.append(straight_line_succeeds(core))
        np.testing.assert_array_equal(core.pos, before[0])
        np.testing.assert_array_equal(core.vel, before[1])
        assert core.np_random.bit_generator.state == before[2]
    greedy = evaluate_scripted("greedy", episodes=30, seed=0)["success_rate"]
    assert np.mean(outcomes) == pytest.approx(greedy)
    assert 0 < sum(outcomes) < 30  # both kinds of episode occur, so the agreement means something


def test_colour_pair_names_the_two_colours_in_palette_order() -> None:
    env = gym.make("PSB/OddOneOut-v0", obs_mode="state")
    core: OddOneOutEnv = env.unwrapped  # type: ignore[assignment]
    env.reset(seed=0)
    pair = colour_pair(core)
    names = sorted({int(c) for c in core.color[1:]})
    assert pair is not None and pair.split("/") == [COLOR_NAMES[c] for c in names]
    shape_env = gym.make("PSB/OddOneOut-v0", obs_mode="state", odd_property="shape")
    shape_env.reset(seed=0)
    assert colour_pair(shape_env.unwrapped) is None  # one colour: the odd one differs by shape

"""Tests of the built-in PSB/ environments (psb_rl/envs/)."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env

from psb_rl import envs
from psb_rl.envs.object_envs import MAX_OBJECTS, NUM_COLORS, NUM_FEATURES, OBJECT_KINDS, ObjectEnv
from psb_rl.envs.sprites import NUM_OBJECT_COLORS, PALETTE, SHAPES, draw_sprite, shape_stamp


def _rollout(env: gym.Env, seed: int, n: int, actions_seed: int = 0) -> list[np.ndarray]:
    obs, _ = env.reset(seed=seed)
    out = [obs]
    for a in np.random.default_rng(actions_seed).integers(0, 5, size=n):
        obs, _, terminated, truncated, _ = env.step(a)
        out.append(obs)
        if terminated or truncated:
            break
    return out


def test_registered_ids() -> None:
    assert len(envs.ENV_IDS) >= 4
    for env_id in ("PSB/RandomObjects-v0", "PSB/ObjectReach-v0", "PSB/ObjectPush-v0", "PSB/OddOneOut-v0"):
        spec = gym.spec(env_id)
        assert spec.max_episode_steps == 100


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
@pytest.mark.parametrize("obs_mode", ["pixels", "state"])
def test_check_env(env_id: str, obs_mode: str) -> None:
    env = gym.make(env_id, obs_mode=obs_mode, return_masks=True, render_mode="rgb_array")
    check_env(env.unwrapped)
    sb3_check_env(gym.make(env_id, obs_mode=obs_mode).unwrapped, warn=False)
    obs, info = env.reset(seed=1)
    assert env.action_space == gym.spaces.Discrete(5)
    if obs_mode == "pixels":
        assert obs.shape == (64, 64, 3) and obs.dtype == np.uint8
    else:
        assert obs.shape == (MAX_OBJECTS, NUM_FEATURES) and obs.dtype == np.float32
    assert info["masks"].shape == (64, 64) and np.issubdtype(info["masks"].dtype, np.integer)
    frame = env.render()
    assert frame.shape == (64, 64, 3) and frame.dtype == np.uint8


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_seeding_is_deterministic(env_id: str) -> None:
    a = _rollout(gym.make(env_id), seed=7, n=30)
    b = _rollout(gym.make(env_id), seed=7, n=30)
    c = _rollout(gym.make(env_id), seed=8, n=30)
    assert len(a) == len(b) and all(np.array_equal(x, y) for x, y in zip(a, b))
    assert not np.array_equal(a[0], c[0])
    assert any(not np.array_equal(a[0], x) for x in a[1:]), "the video must be dynamic"


@pytest.mark.parametrize("env_id", envs.ENV_IDS)
def test_masks_agree_with_pixels(env_id: str) -> None:
    env = gym.make(env_id, return_masks=True)
    core: ObjectEnv = env.unwrapped
    for seed in range(3):
        obs, info = env.reset(seed=seed)
        for t in range(40):
            masks = info["masks"]
            assert masks.shape == obs.shape[:2]
            assert np.all(obs[masks == 0] == 0), "background must be black"
            for k in np.unique(masks[masks > 0]):
                colour = PALETTE[core.color[k - 1]]
                assert np.all(obs[masks == k] == colour), f"label {k} pixels must have object {k}'s colour"
            assert 1 in np.unique(masks), "the agent is drawn last, so it is always visible"
            obs, _, terminated, truncated, info = env.step(t % 5)
            if terminated or truncated:
                break


def test_state_obs_matches_objects() -> None:
    env = gym.make("PSB/RandomObjects-v0", obs_mode="state", return_masks=True)
    obs, info = env.reset(seed=3)
    core: ObjectEnv = env.unwrapped
    n = len(core.color)
    assert 4 <= n <= 7  # agent + 3..6 objects
    assert obs[:, -1].sum() == n and obs[0, -2] == 1 and obs[1:, -2].sum() == 0
    np.testing.assert_allclose(obs[:n, :2], core.pos / 64, rtol=1e-6)
    assert np.array_equal(obs[:n, 5:5 + NUM_COLORS].argmax(1), core.color)
    assert np.array_equal(obs[:n, 5 + NUM_COLORS:5 + NUM_COLORS + len(SHAPES)].argmax(1), core.shape)
    assert np.all(obs[n:] == 0), "padding rows are zero"
    # colours of the non-agent objects are distinct so a model can segment them
    assert len(set(core.color[1:].tolist())) == n - 1
    assert set(np.unique(info["masks"])) <= set(range(n + 1))


def test_renderer_shapes_sizes_and_palette() -> None:
    assert len(SHAPES) >= 4 and {"square", "circle", "triangle"} <= set(SHAPES)
    assert NUM_OBJECT_COLORS >= 6
    cols = PALETTE[:NUM_OBJECT_COLORS].astype(int)
    dists = np.abs(cols[:, None] - cols[None]).sum(-1) + np.eye(len(cols), dtype=int) * 1000
    assert dists.min() >= 100, "object colours must be well separated"
    for s in range(len(SHAPES)):
        areas = [shape_stamp(s, size).mean() for size in (7, 9, 11)]
        assert all(0.3 < a <= 1.0 for a in areas)
    assert shape_stamp(SHAPES.index("circle"), 11).sum() < shape_stamp(SHAPES.index("square"), 11).sum()


def test_occlusion_later_drawn_overwrites_and_clipping() -> None:
    canvas = np.zeros((16, 16, 3), np.uint8)
    masks = np.zeros((16, 16), np.int32)
    draw_sprite(canvas, 8, 8, 0, 8, PALETTE[0], masks, 1)
    draw_sprite(canvas, 10, 10, 0, 8, PALETTE[1], masks, 2)
    assert masks[10, 10] == 2 and np.array_equal(canvas[10, 10], PALETTE[1])
    assert masks[5, 5] == 1 and np.array_equal(canvas[5, 5], PALETTE[0])
    draw_sprite(canvas, 0, 15, 0, 8, PALETTE[2], masks, 3)  # partly outside: clipped, no error
    assert masks[15, 0] == 3
    draw_sprite(canvas, -20, -20, 0, 8, PALETTE[2], masks, 4)  # fully outside: nothing drawn
    assert not np.any(masks == 4)


def test_image_size_is_configurable() -> None:
    env = gym.make("PSB/OddOneOut-v0", image_size=32, return_masks=True)
    obs, info = env.reset(seed=0)
    assert obs.shape == (32, 32, 3) and info["masks"].shape == (32, 32)
    _, _, _, _, info = env.step(0)
    assert info["masks"].shape == (32, 32)


def test_random_objects_truncates_at_100_with_is_success() -> None:
    env = gym.make("PSB/RandomObjects-v0")
    env.reset(seed=0)
    for t in range(100):
        _, reward, terminated, truncated, info = env.step(t % 5)
        assert reward == 0.0 and not terminated
    assert truncated and info["is_success"] is False


def _greedy(obs: np.ndarray, target_row: int) -> int:
    dx, dy = obs[target_row, :2] - obs[0, :2]
    if abs(dx) > abs(dy):
        return 4 if dx > 0 else 3
    return 2 if dy > 0 else 1


def test_reach_success_with_scripted_policy() -> None:
    env = gym.make("PSB/ObjectReach-v0", obs_mode="state")
    successes = 0
    for seed in range(10):
        obs, _ = env.reset(seed=seed)
        # the target is a red square, identified from features alone
        target = int(np.flatnonzero((obs[:, 5] == 1) & (obs[:, 5 + NUM_COLORS] == 1))[0])
        for _ in range(100):
            obs, reward, terminated, truncated, info = env.step(_greedy(obs, target))
            if terminated or truncated:
                break
        if info["is_success"]:
            assert terminated and reward == pytest.approx(0.99)
            successes += 1
    assert successes >= 9


def test_reach_progress_reward_pays_for_distance_closed() -> None:
    sparse = gym.make("PSB/ObjectReach-v0", obs_mode="state")
    dense = gym.make("PSB/ObjectReach-v0", obs_mode="state", progress_reward=2.0)
    for env in (sparse, dense):
        env.reset(seed=3)
    core = dense.unwrapped
    rewards = {"toward": [], "away": []}
    for _ in range(6):
        gap = core.pos[1] - core.pos[0]
        before = float(np.linalg.norm(gap)) / core.image_size
        action = (4 if gap[0] > 0 else 3) if abs(gap[0]) > abs(gap[1]) else (2 if gap[1] > 0 else 1)
        sparse_reward = sparse.step(action)[1]
        _, reward, terminated, _, info = dense.step(action)
        after = float(np.linalg.norm(core.pos[1] - core.pos[0])) / core.image_size
        # the same dynamics; the dense reward adds exactly 2 x the distance closed (image widths)
        assert reward == pytest.approx(sparse_reward + 2.0 * (before - after))
        rewards["toward"].append(reward - sparse_reward)
        if terminated:
            assert info["is_success"] and sparse_reward == pytest.approx(0.99)
            break
    assert sum(rewards["toward"]) > 0.0
    dense.reset(seed=3)
    gap = core.pos[1] - core.pos[0]
    away = (3 if gap[0] > 0 else 4) if abs(gap[0]) > abs(gap[1]) else (1 if gap[1] > 0 else 2)
    assert dense.step(away)[1] < -0.01  # moving away costs more than the step cost


@pytest.mark.parametrize("odd_property", ["color", "shape"])
def test_odd_one_out_right_and_wrong(odd_property: str) -> None:
    env = gym.make("PSB/OddOneOut-v0", obs_mode="state", odd_property=odd_property)
    right = wrong = 0
    for seed in range(8):
        obs, _ = env.reset(seed=seed)
        feats = obs[1:5, 5:5 + NUM_COLORS] if odd_property == "color" else obs[1:5, 5 + NUM_COLORS:-2]
        ids = feats.argmax(1)
        values, counts = np.unique(ids, return_counts=True)
        assert sorted(counts.tolist()) == [1, 3], "3 objects share the property, one differs"
        odd = 1 + int(np.flatnonzero(ids == values[counts == 1][0])[0])
        goal = odd if seed % 2 == 0 else 1 + (odd % 4)  # alternate: seek odd / seek a wrong one
        for _ in range(100):
            obs, reward, terminated, truncated, info = env.step(_greedy(obs, goal))
            if terminated or truncated:
                break
        if terminated and info["is_success"]:
            right += 1
            assert reward == pytest.approx(0.99)
        elif terminated:
            wrong += 1
            assert reward < 0 and not info["is_success"]
    assert right >= 3 and wrong >= 3


def _min_gaps(env: gym.Env) -> np.ndarray:
    """Free space between the boxes of every pair of objects (Chebyshev), ``(pairs,)``."""
    core = env.unwrapped
    gaps = []
    for i in range(len(core.size)):
        for j in range(i + 1, len(core.size)):
            gaps.append(np.abs(core.pos[i] - core.pos[j]).max() - (core.size[i] + core.size[j]) / 2.0)
    return np.asarray(gaps)


def test_odd_one_out_layout() -> None:
    env = gym.make("PSB/OddOneOut-v0", obs_mode="state")
    for seed in range(20):
        env.reset(seed=seed)
        assert np.array_equal(env.unwrapped.pos[0], [32.0, 32.0]), "the agent starts in the centre"
        assert _min_gaps(env).min() > 5.0, "objects start at least `spacing` pixels apart"
    crowded = gym.make("PSB/OddOneOut-v0", obs_mode="state", agent_start="random", spacing=2.0)
    starts = set()
    for seed in range(20):
        obs, _ = crowded.reset(seed=seed)
        starts.add(tuple(obs[0, :2]))
        assert _min_gaps(crowded).min() > 2.0
    assert len(starts) == 20, "agent_start='random' samples the agent's position"
    with pytest.raises(ValueError, match="agent_start must be"):
        gym.make("PSB/OddOneOut-v0", agent_start="corner")
    with pytest.raises(ValueError, match="spacing must be"):
        gym.make("PSB/OddOneOut-v0", spacing=20.0)


def test_push_moves_target_and_goal_succeeds() -> None:
    env = gym.make("PSB/ObjectPush-v0", obs_mode="state")
    env.reset(seed=0)
    core = env.unwrapped
    core.pos[1] = [48.0, 32.0]  # goal
    core.pos[2] = [30.0, 32.0]  # target
    core.pos[0] = [22.0, 32.0]  # agent just left of the target
    core.vel[3:] = 0.0
    core.pos[3:] = [5.0, 60.0]
    before = core.pos[2].copy()
    _, _, terminated, _, _ = env.step(4)  # right: agent now overlaps the target and pushes it
    assert not terminated and core.pos[2][0] == pytest.approx(before[0] + 3.0)
    for _ in range(20):
        _, reward, terminated, _, info = env.step(4)
        if terminated:
            break
    assert terminated and info["is_success"] and reward == pytest.approx(0.99)
    # the target does not move on its own
    env.reset(seed=1)
    p = core.pos[2].copy()
    env.step(0)
    assert np.array_equal(core.pos[2], p) or core._overlaps(0, 2)


def test_objects_bounce_and_stay_inside() -> None:
    env = gym.make("PSB/RandomObjects-v0")
    env.reset(seed=5)
    core = env.unwrapped
    signs = np.sign(core.vel[1:]).copy()
    flipped = False
    for _ in range(99):
        env.step(0)
        half = core.size[:, None] / 2
        assert np.all(core.pos >= half - 1e-9) and np.all(core.pos <= 64 - half + 1e-9)
        flipped |= bool(np.any(np.sign(core.vel[1:]) != signs))
    assert flipped, "some object must have bounced off a wall within 100 steps"


def test_bad_arguments() -> None:
    with pytest.raises(ValueError, match="obs_mode"):
        gym.make("PSB/ObjectReach-v0", obs_mode="rgb")
    env = gym.make("PSB/ObjectReach-v0")
    env.reset(seed=0)
    with pytest.raises(ValueError, match="action"):
        env.unwrapped.step(7)


def test_mask_categories_name_each_objects_kind() -> None:
    expected = {
        "PSB/RandomObjects-v0": lambda env: {"agent", "object"},
        "PSB/ObjectReach-v0": lambda env: {"agent", "target", "distractor"},
        "PSB/ObjectPush-v0": lambda env: {"agent", "goal", "target", "distractor"},
        "PSB/OddOneOut-v0": lambda env: {"agent", "odd", "common"},
    }
    for env_id, kinds in expected.items():
        env = gym.make(env_id, return_masks=True)
        _, info = env.reset(seed=0)
        core: ObjectEnv = env.unwrapped
        categories = info["mask_categories"]
        assert categories.shape == (MAX_OBJECTS + 1,) and categories[0] == -1
        n = len(core.color)
        assert (categories[1 : n + 1] >= 0).all() and (categories[n + 1 :] == -1).all()
        names = [OBJECT_KINDS[c] for c in categories[1 : n + 1]]
        assert names[0] == "agent" and set(names) == kinds(env)
        if env_id == "PSB/OddOneOut-v0":
            assert names.index("odd") == core.odd_index and names.count("odd") == 1
        assert env.get_wrapper_attr("mask_category_names") == OBJECT_KINDS

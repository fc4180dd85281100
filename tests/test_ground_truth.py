"""Tests for :mod:`psb_rl.ground_truth`: MiniGrid masks pixel-exact against the renderer, boxes → masks,
the OCAtari wrapper with a stand-in detector (and with OCAtari itself when it is installed)."""

from __future__ import annotations

import importlib.util
import itertools
import os
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

from psb_rl.ground_truth import (
    MAX_LABELS,
    MINIGRID_CATEGORIES,
    MiniGridMasks,
    OCAtariMasks,
    _minigrid_highlight,
    boxes_to_masks,
    mask_category_names,
    with_ground_truth,
)

minigrid = pytest.importorskip("minigrid")
from minigrid.core.grid import Grid  # noqa: E402

# Together these draw every MiniGrid object kind: agent, wall, goal, door (locked, closed, open), key, ball,
# box, lava, and moving balls.
MINIGRID_IDS = ("MiniGrid-DoorKey-5x5-v0", "MiniGrid-BlockedUnlockPickup-v0", "MiniGrid-LavaGapS5-v0",
                "MiniGrid-Dynamic-Obstacles-5x5-v0")


def floor_render(base, highlight: np.ndarray) -> np.ndarray:
    """The frame of an empty grid: every tile an empty floor tile with the frame's highlight."""
    size = base.tile_size
    rows = [np.concatenate([Grid.render_tile(None, None, bool(highlight[i, j]), size) for i in range(base.width)],
                           axis=1) for j in range(base.height)]
    return np.concatenate(rows, axis=0)


def object_tiles(base) -> dict[tuple[int, int], str]:
    """``{(i, j): type}`` of every non-empty cell."""
    return {(i, j): base.grid.get(i, j).type for i in range(base.width) for j in range(base.height)
            if base.grid.get(i, j) is not None}


def check_frame(env: gym.Env, masks: np.ndarray, categories: np.ndarray) -> None:
    base = env.unwrapped
    size = base.tile_size
    frame = env.render()
    assert masks.shape == frame.shape[:2]
    highlight = _minigrid_highlight(base) if base.highlight else np.zeros((base.width, base.height), bool)
    # every pixel that differs from an empty floor belongs to some object, and no other pixel does
    np.testing.assert_array_equal(masks > 0, (frame != floor_render(base, highlight)).any(axis=-1))
    agent = tuple(int(v) for v in base.agent_pos)
    tiles = object_tiles(base)
    for label in np.unique(masks[masks > 0]):
        ys, xs = np.nonzero(masks == label)
        cells = set(zip((xs // size).tolist(), (ys // size).tolist(), strict=True))
        name = MINIGRID_CATEGORIES[categories[label]]
        if name == "agent":
            assert cells == {agent}
            empty_with_agent = Grid.render_tile(None, base.agent_dir, bool(highlight[agent]), size)
            triangle = (empty_with_agent != Grid.render_tile(None, None, bool(highlight[agent]), size)).any(-1)
            i, j = agent
            np.testing.assert_array_equal(masks[j * size:(j + 1) * size, i * size:(i + 1) * size] == label, triangle)
        else:
            assert all(tiles.get(cell) == name for cell in cells), (name, cells)
    for (i, j), kind in tiles.items():  # each object's pixels are exactly its tile's non-floor pixels
        tile = masks[j * size:(j + 1) * size, i * size:(i + 1) * size]
        drawn = (frame[j * size:(j + 1) * size, i * size:(i + 1) * size]
                 != Grid.render_tile(None, None, bool(highlight[i, j]), size)).any(-1)
        labels = set(np.unique(tile[drawn]).tolist())
        kinds = {MINIGRID_CATEGORIES[categories[v]] for v in labels}
        assert kinds == ({kind, "agent"} if (i, j) == agent and kind not in ("agent",) and len(kinds) == 2 else {kind})


@pytest.mark.parametrize("highlight", [False, True])
@pytest.mark.parametrize("env_id", MINIGRID_IDS)
def test_minigrid_masks_are_pixel_exact(env_id, highlight):
    env = MiniGridMasks(gym.make(env_id, render_mode="rgb_array", highlight=highlight))
    assert mask_category_names(env) == MINIGRID_CATEGORIES
    rng = np.random.default_rng(0)
    seen: set[str] = set()
    first_labels: dict[tuple[int, int], int] = {}
    for episode in range(2):
        _, info = env.reset(seed=episode)
        for _ in range(20):
            masks, categories = info["masks"], info["mask_categories"]
            assert categories.shape == (MAX_LABELS + 1,) and categories[0] == -1
            check_frame(env, masks, categories)
            seen |= {MINIGRID_CATEGORIES[c] for c in categories if c >= 0}
            if episode == 0:  # static objects keep their label through the episode
                for (i, j), kind in object_tiles(env.unwrapped).items():
                    if kind == "wall":
                        label = int(masks[j * env.unwrapped.tile_size + env.unwrapped.tile_size // 2,
                                          i * env.unwrapped.tile_size + env.unwrapped.tile_size // 2])
                        assert first_labels.setdefault((i, j), label) == label
            _, _, terminated, truncated, info = env.step(int(rng.integers(env.action_space.n)))
            if terminated or truncated:
                break
    assert {"agent", "wall"} <= seen


def test_minigrid_kinds_and_wall_components():
    env = MiniGridMasks(gym.make("MiniGrid-BlockedUnlockPickup-v0", render_mode="rgb_array", highlight=False))
    _, info = env.reset(seed=0)
    names = {MINIGRID_CATEGORIES[c] for c in info["mask_categories"] if c >= 0}
    assert names == {"agent", "wall", "door", "key", "ball", "box"}
    # the outer wall and the wall between the rooms are one 4-connected structure: one label
    walls = [label for label, c in enumerate(info["mask_categories"]) if c == MINIGRID_CATEGORIES.index("wall")]
    assert len(walls) == 1
    env2 = MiniGridMasks(gym.make("MiniGrid-LavaGapS5-v0", render_mode="rgb_array", highlight=False))
    for seed in range(10):  # the lava column is split into two components when its gap is not at an end
        _, info = env2.reset(seed=seed)
        rows = sorted(j for (_, j), kind in object_tiles(env2.unwrapped).items() if kind == "lava")
        runs = 1 + sum(b - a > 1 for a, b in itertools.pairwise(rows))
        lava = [label for label, c in enumerate(info["mask_categories"]) if c == MINIGRID_CATEGORIES.index("lava")]
        assert len(lava) == runs
        if runs == 2:
            break
    assert runs == 2


def test_agent_over_an_object_owns_its_triangle():
    env = MiniGridMasks(gym.make("MiniGrid-Empty-5x5-v0", render_mode="rgb_array", highlight=False))
    env.reset(seed=0)
    base = env.unwrapped
    goal = next(cell for cell, kind in object_tiles(base).items() if kind == "goal")
    base.agent_pos = goal  # the agent standing on the goal (the last frame of a successful episode)
    masks, categories = env.masks()
    check_frame(env, masks, categories)
    i, j = goal
    size = base.tile_size
    kinds = {MINIGRID_CATEGORIES[categories[v]] for v in np.unique(masks[j * size:(j + 1) * size, i * size:(i + 1) * size])}
    assert kinds == {"agent", "goal"}


def test_minigrid_pov_render_is_refused():
    env = MiniGridMasks(gym.make("MiniGrid-Empty-5x5-v0", render_mode="rgb_array", agent_pov=True))
    with pytest.raises(ValueError, match="agent_pov=False"):
        env.reset(seed=0)


def test_highlight_cells_match_the_renderer():
    env = gym.make("MiniGrid-DoorKey-5x5-v0", render_mode="rgb_array", highlight=True)
    env.reset(seed=3)
    base = env.unwrapped
    expected = base.grid.render(base.tile_size, base.agent_pos, base.agent_dir, _minigrid_highlight(base))
    np.testing.assert_array_equal(env.render(), expected)


def test_boxes_to_masks():
    masks = boxes_to_masks([(1, 2, 3, 2), (2, 3, 10, 10), (-5, -5, 2, 2)], (6, 5))
    expected = np.zeros((6, 5), dtype=np.int32)
    expected[2:4, 1:4] = 1
    expected[3:6, 2:5] = 2  # drawn over box 1, clipped to the frame; box 3 lies outside
    np.testing.assert_array_equal(masks, expected)


class FakeDetector:
    """Stands in for OCAtari: a paddle at a RAM-given row and a ball that appears on odd frames."""

    categories = ("Player", "Ball")

    def __init__(self) -> None:
        self.resets = 0
        self.calls = 0

    def reset(self) -> None:
        self.resets += 1

    def __call__(self, ram):
        self.calls += 1
        objects = [("Player", (140, 30, 4, 16))]
        if self.calls % 2 == 0:
            objects.append(("Ball", (80, 100, 2, 4)))
        return objects


def test_ocatari_wrapper_with_a_stand_in_detector():
    ale_py = pytest.importorskip("ale_py")
    gym.register_envs(ale_py)
    detector = FakeDetector()
    env = OCAtariMasks(gym.make("ALE/Pong-v5"), detector=detector)
    obs, info = env.reset(seed=0)
    assert detector.resets == 1 and info["masks"].shape == obs.shape[:2] == (210, 160)
    assert info["mask_categories"][:2].tolist() == [-1, 0] and info["mask_categories"][2] == -1
    assert (info["masks"] == 1).sum() == 4 * 16 and info["masks"][30, 140] == 1
    _, _, _, _, info = env.step(0)
    assert (info["masks"] == 2).sum() == 8 and info["mask_categories"][2] == 1
    assert mask_category_names(env) == ("Player", "Ball")
    env.close()


def test_with_ground_truth_chooses_the_source():
    env = with_ground_truth(gym.make("MiniGrid-Empty-5x5-v0", render_mode="rgb_array"))
    assert isinstance(env, MiniGridMasks)
    import psb_rl  # noqa: F401  (registers PSB/ ids)

    psb = gym.make("PSB/RandomObjects-v0")
    assert with_ground_truth(psb) is psb and mask_category_names(psb) != ()


def test_ground_truth_factory_pickles_for_vector_env_workers():
    import functools
    import pickle

    from psb_rl.ground_truth import ground_truth_factory

    factory = pickle.loads(pickle.dumps(ground_truth_factory(
        functools.partial(gym.make, "MiniGrid-Empty-5x5-v0", render_mode="rgb_array"))))
    _, info = factory().reset(seed=0)
    assert info["masks"].shape == (160, 160) and (info["masks"] > 0).any()


def installed_or_skip(name: str) -> Any:
    """Import ``name``; without it skip, except in CI (``CI`` set), whose install (``make install``) provides it."""
    if importlib.util.find_spec(name) is None and os.environ.get("CI"):
        pytest.fail(f"{name} is not installed, but make install installs it (pip install -e '.[dev,atari-gt]')")
    return pytest.importorskip(name)


def test_ocatari_pong_when_installed():
    installed_or_skip("ocatari")
    ale_py = installed_or_skip("ale_py")
    gym.register_envs(ale_py)
    env = with_ground_truth(gym.make("ALE/Pong-v5"))
    assert isinstance(env, OCAtariMasks) and {"Player", "Ball", "Enemy"} <= set(mask_category_names(env))
    _, info = env.reset(seed=0)
    for _ in range(60):
        _, _, _, _, info = env.step(0)
    names = {env.mask_category_names[c] for c in info["mask_categories"] if c >= 0}
    assert "Player" in names and (info["masks"] > 0).any()

"""Object-centric gymnasium environments: moving 2-D sprites on a black background.

Every environment shares :class:`ObjectEnv`: an agent sprite (white circle) moved by
``Discrete(5)`` actions (0 no-op, 1 up, 2 down, 3 left, 4 right) among other sprites that move with
their own velocities and bounce off the walls (objects pass through each other, so they occlude).

Objects are indexed ``0..n-1``; object ``0`` is always the agent. Object ``i`` has label ``i + 1``
in the segmentation masks (0 = background) and row ``i`` in the ``"state"`` observation. Objects
are drawn in index order, except the agent, which is drawn last (on top); masks are occlusion-
correct (later-drawn objects overwrite).

Observations (``obs_mode``):

- ``"pixels"`` (default): uint8 ``(image_size, image_size, 3)``.
- ``"state"``: float32 ``(MAX_OBJECTS, NUM_FEATURES)``, one row per object, zero-padded. Features:
  ``x, y`` (centre, in [0, 1] of the image), ``vx, vy`` (pixels/step × 8 / image_size),
  ``size`` (fraction of the image), one-hot colour (:data:`psb_rl.envs.sprites.COLOR_NAMES`), one-hot shape
  (:data:`psb_rl.envs.sprites.SHAPES`), ``is_agent``, ``present``.

With ``return_masks=True`` the reset and every step info carry ``info["masks"]``: int32
``(image_size, image_size)``, and ``info["mask_categories"]``: int16 ``(MAX_OBJECTS + 1,)``, the index into
:data:`OBJECT_KINDS` of each label's object (``-1`` for the background and unused labels). Every step info carries ``info["is_success"]``.
Rewards: ``+1`` on success (episode terminates), a small step cost ``-0.01`` otherwise (ObjectReach
can add a dense reward for progress towards its target).
"""

from __future__ import annotations

import math
from typing import Any

import gymnasium as gym
import numpy as np
from gymnasium import spaces

from psb_rl.envs.sprites import AGENT_COLOR, GOAL_COLOR, NUM_OBJECT_COLORS, PALETTE, SHAPES, draw_sprite

MAX_OBJECTS: int = 8
NUM_COLORS: int = len(PALETTE)
NUM_SHAPES: int = len(SHAPES)
NUM_FEATURES: int = 5 + NUM_COLORS + NUM_SHAPES + 2
#: Object sizes (bounding-box side in pixels) at the reference resolution of 64.
OBJECT_SIZES: tuple[int, ...] = (7, 9, 11)
AGENT_SIZE: int = 9
_ACTION_DELTAS = np.array([[0, 0], [0, -1], [0, 1], [-1, 0], [1, 0]], dtype=np.float64)
_CIRCLE = SHAPES.index("circle")
#: Kinds of objects, the categories of ground-truth masks: the agent; "object" (RandomObjects); the target,
#: goal region and distractors of the reach and push tasks; the odd object and the common ones of OddOneOut.
OBJECT_KINDS: tuple[str, ...] = ("agent", "object", "target", "goal", "distractor", "odd", "common")
_SQUARE = SHAPES.index("square")


class ObjectEnv(gym.Env):
    """Base class: sprite physics, rendering, observations and masks. Subclasses define the task.

    :param image_size: side of the square RGB frame in pixels.
    :param obs_mode: ``"pixels"`` (uint8 ``(H, W, 3)``) or ``"state"`` (float32 ``(K, F)``).
    :param return_masks: put the ground-truth segmentation ``(H, W)`` int32 into ``info["masks"]``.
    :param render_mode: ``None`` or ``"rgb_array"``.
    :param max_speed: largest object speed in pixels/step at resolution 64 (scaled with image_size).
    :param agent_speed: agent displacement per move action in pixels at resolution 64.
    :param step_cost: reward subtracted every step.
    """

    metadata: dict[str, Any] = {"render_modes": ["rgb_array"], "render_fps": 15}  # noqa: RUF012
    #: The name of each category index in ``info["mask_categories"]``.
    mask_category_names: tuple[str, ...] = OBJECT_KINDS

    def __init__(
        self,
        image_size: int = 64,
        obs_mode: str = "pixels",
        return_masks: bool = False,
        render_mode: str | None = None,
        max_speed: float = 1.5,
        agent_speed: float = 3.0,
        step_cost: float = 0.01,
    ) -> None:
        if obs_mode not in ("pixels", "state"):
            raise ValueError(f"obs_mode must be 'pixels' or 'state', got {obs_mode!r}")
        if render_mode not in (None, "rgb_array"):
            raise ValueError(f"render_mode must be None or 'rgb_array', got {render_mode!r}")
        if image_size < 16:
            raise ValueError(f"image_size must be >= 16, got {image_size}")
        self.image_size = int(image_size)
        self.obs_mode = obs_mode
        self.return_masks = bool(return_masks)
        self.render_mode = render_mode
        self.scale = self.image_size / 64.0
        self.max_speed = float(max_speed) * self.scale
        self.agent_speed = float(agent_speed) * self.scale
        self.step_cost = float(step_cost)
        self.action_space = spaces.Discrete(5)
        if obs_mode == "pixels":
            self.observation_space = spaces.Box(0, 255, (self.image_size, self.image_size, 3), np.uint8)
        else:
            self.observation_space = spaces.Box(-1.0, 1.0, (MAX_OBJECTS, NUM_FEATURES), np.float32)
        self._reset_objects()

    # ----------------------------------------------------------------- objects
    def _reset_objects(self) -> None:
        self.pos = np.zeros((0, 2))
        self.vel = np.zeros((0, 2))
        self.size = np.zeros(0, dtype=np.int64)
        self.color = np.zeros(0, dtype=np.int64)
        self.shape = np.zeros(0, dtype=np.int64)
        self.is_success = False

    def _px(self, size64: float) -> int:
        """Convert a size at resolution 64 into pixels at this resolution."""
        return max(3, math.floor(size64 * self.scale + 0.5))

    def _place(self, sizes: list[int], margins: list[float] | None = None, gap: float = 2.0,
               agent_at_centre: bool = False) -> np.ndarray:
        """Sample non-overlapping centres ``(n, 2)`` for boxes of the given pixel sizes.

        :param sizes: box side of each object in pixels (object 0 is the agent).
        :param margins: extra distance of each object from the walls, in pixels.
        :param gap: least free space between any two boxes, in pixels at resolution 64.
        :param agent_at_centre: put object 0 in the middle of the image instead of sampling it.
        """
        rng = self.np_random
        pos = np.zeros((len(sizes), 2))
        for i, s in enumerate(sizes):
            if i == 0 and agent_at_centre:
                pos[0] = self.image_size / 2.0
                continue
            lo = s / 2.0 + (margins[i] if margins else 0.0)
            hi = self.image_size - lo
            for _ in range(200):
                p = rng.uniform(lo, hi, size=2)
                min_dist = (np.asarray(sizes[:i]) + s) / 2.0 + gap * self.scale
                if i == 0 or np.all(np.abs(pos[:i] - p).max(axis=1) > min_dist):
                    break
            pos[i] = p
        return pos

    def _random_velocities(self, n: int) -> np.ndarray:
        rng = self.np_random
        speed = rng.uniform(0.3, 1.0, size=n) * self.max_speed
        angle = rng.uniform(0.0, 2.0 * np.pi, size=n)
        return np.stack([speed * np.cos(angle), speed * np.sin(angle)], axis=1)

    def _set_objects(self, color: list[int], shape: list[int], size: list[int], vel: np.ndarray,
                     margins: list[float] | None = None, gap: float = 2.0, agent_at_centre: bool = False
                     ) -> None:
        """Set all objects (index 0 = agent) and place them without overlap (see :meth:`_place`)."""
        self.color = np.asarray(color, dtype=np.int64)
        self.shape = np.asarray(shape, dtype=np.int64)
        self.size = np.asarray(size, dtype=np.int64)
        self.vel = np.asarray(vel, dtype=np.float64).reshape(-1, 2)
        self.pos = self._place(list(self.size), margins, gap, agent_at_centre)
        assert len(self.color) <= MAX_OBJECTS

    def _sample_distractors(self) -> tuple[int, np.ndarray, np.ndarray, list[int]]:
        """Draw ``num_distractors`` (inclusive range) distractors, never of the target colour (index 0).

        :return: count, colour indices, shape indices, sizes in pixels.
        """
        rng = self.np_random
        low, high = self.num_distractors
        n = int(rng.integers(low, high + 1))
        colors = rng.choice(np.arange(1, NUM_OBJECT_COLORS), size=n, replace=False)
        shapes = rng.integers(0, NUM_SHAPES, size=n)
        sizes = [self._px(s) for s in rng.choice(OBJECT_SIZES, size=n)]
        return n, colors, shapes, sizes

    def _overlaps(self, i: int, j: int) -> bool:
        """Whether the bounding boxes of objects ``i`` and ``j`` overlap."""
        reach = (self.size[i] + self.size[j]) / 2.0
        d = np.abs(self.pos[i] - self.pos[j])
        return bool(d[0] < reach and d[1] < reach)

    def _clip(self, i: int) -> None:
        half = self.size[i] / 2.0
        np.clip(self.pos[i], half, self.image_size - half, out=self.pos[i])

    # ---------------------------------------------------------------- rendering
    def _draw(self, with_masks: bool) -> tuple[np.ndarray, np.ndarray | None]:
        s = self.image_size
        canvas = np.zeros((s, s, 3), dtype=np.uint8)
        masks = np.zeros((s, s), dtype=np.int32) if with_masks else None
        n = len(self.color)
        for i in (*range(1, n), 0):
            draw_sprite(canvas, self.pos[i, 0], self.pos[i, 1], int(self.shape[i]), int(self.size[i]),
                        PALETTE[self.color[i]], masks, i + 1)
        return canvas, masks

    def _state(self) -> np.ndarray:
        n = len(self.color)
        out = np.zeros((MAX_OBJECTS, NUM_FEATURES), dtype=np.float32)
        out[:n, 0:2] = self.pos / self.image_size
        out[:n, 2:4] = np.clip(self.vel * 8.0 / self.image_size, -1.0, 1.0)
        out[:n, 4] = self.size / self.image_size
        out[np.arange(n), 5 + self.color] = 1.0
        out[np.arange(n), 5 + NUM_COLORS + self.shape] = 1.0
        out[0, -2] = 1.0
        out[:n, -1] = 1.0
        return out

    def _observe(self, info: dict[str, Any]) -> np.ndarray:
        if self.obs_mode == "pixels" or self.return_masks:
            frame, masks = self._draw(self.return_masks)
            if masks is not None:
                info["masks"] = masks
                info["mask_categories"] = np.full(MAX_OBJECTS + 1, -1, dtype=np.int16)
                info["mask_categories"][1 : len(self.color) + 1] = [OBJECT_KINDS.index(k) for k in self._kinds()]
            if self.obs_mode == "pixels":
                return frame
        return self._state()

    def render(self) -> np.ndarray | None:  # type: ignore[override]
        """Return the current frame, uint8 ``(H, W, 3)``, when ``render_mode == "rgb_array"``."""
        if self.render_mode != "rgb_array":
            return None
        return self._draw(False)[0]

    def _kinds(self) -> list[str]:
        """The kind (:data:`OBJECT_KINDS`) of each object, index 0 = the agent."""
        return ["agent"] + ["object"] * (len(self.color) - 1)

    # ------------------------------------------------------------------- task
    def _spawn(self) -> None:
        """Create the objects of a new episode (subclasses)."""
        raise NotImplementedError

    def _task(self, delta: np.ndarray) -> tuple[float, bool]:
        """Return ``(task_reward, terminated)`` after the move; may set ``self.is_success``."""
        return 0.0, False

    def _after_agent_move(self, delta: np.ndarray) -> None:
        """Hook between the agent's move and the other objects' moves (e.g. pushing)."""

    # -------------------------------------------------------------------- API
    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None
              ) -> tuple[np.ndarray, dict[str, Any]]:
        super().reset(seed=seed)
        self._reset_objects()
        self._spawn()
        info: dict[str, Any] = {"is_success": False}
        return self._observe(info), info

    def step(self, action: Any) -> tuple[np.ndarray, float, bool, bool, dict[str, Any]]:
        a = int(action)
        if not 0 <= a < 5:
            raise ValueError(f"action must be in 0..4 (Discrete(5)), got {action!r}")
        delta = _ACTION_DELTAS[a] * self.agent_speed
        old = self.pos[0].copy()
        self.pos[0] += delta
        self._clip(0)
        self.vel[0] = self.pos[0] - old
        self._after_agent_move(self.pos[0] - old)
        # other objects: constant velocity, elastic bounce off the walls
        if len(self.color) > 1:
            p, v = self.pos[1:], self.vel[1:]
            p += v
            half = (self.size[1:] / 2.0)[:, None]
            lo, hi = half, self.image_size - half
            below, above = p < lo, p > hi
            p[:] = np.where(below, 2 * lo - p, np.where(above, 2 * hi - p, p))
            v[below | above] *= -1.0
            np.clip(p, lo, hi, out=p)
        task_reward, terminated = self._task(delta)
        reward = task_reward - self.step_cost
        info: dict[str, Any] = {"is_success": self.is_success}
        return self._observe(info), float(reward), bool(terminated), False, info


class RandomObjectsEnv(ObjectEnv):
    """3–6 moving objects of distinct colours plus the agent; no task (pretraining data).

    :param min_objects: fewest non-agent objects.
    :param max_objects: most non-agent objects (<= 7).
    :param kwargs: see :class:`ObjectEnv`.
    """

    def __init__(self, min_objects: int = 3, max_objects: int = 6, **kwargs: Any) -> None:
        if not 1 <= min_objects <= max_objects <= min(MAX_OBJECTS - 1, NUM_OBJECT_COLORS):
            raise ValueError(f"need 1 <= min_objects <= max_objects <= 7, got {min_objects}, {max_objects}")
        self.min_objects, self.max_objects = min_objects, max_objects
        kwargs.setdefault("step_cost", 0.0)
        super().__init__(**kwargs)

    def _spawn(self) -> None:
        rng = self.np_random
        n = int(rng.integers(self.min_objects, self.max_objects + 1))
        colors = rng.choice(NUM_OBJECT_COLORS, size=n, replace=False)
        shapes = rng.integers(0, NUM_SHAPES, size=n)
        sizes = [self._px(s) for s in rng.choice(OBJECT_SIZES, size=n)]
        vel = np.concatenate([np.zeros((1, 2)), self._random_velocities(n)])
        self._set_objects([AGENT_COLOR, *colors], [_CIRCLE, *shapes], [self._px(AGENT_SIZE), *sizes], vel)


class ObjectReachEnv(ObjectEnv):
    """Reach the target — the red square — among moving distractors of other colours.

    Success (+1, episode ends) when the agent touches the target. With ``progress_reward > 0`` every
    step also pays for the distance closed to the target: ``progress_reward`` × (distance before −
    distance after), distances between centres in image widths (a dense signal; it is negative when the
    gap grows, so it cannot be farmed, and success is measured as before).

    :param num_distractors: ``(low, high)`` inclusive range of distractor counts.
    :param progress_reward: reward per image width closed towards the target (0: the sparse task).
    :param kwargs: see :class:`ObjectEnv` (``max_speed`` defaults to 1.0 here).
    """

    TARGET_COLOR = 0
    TARGET_SHAPE = _SQUARE

    def __init__(self, num_distractors: tuple[int, int] = (2, 4), progress_reward: float = 0.0,
                 **kwargs: Any) -> None:
        self.num_distractors = (int(num_distractors[0]), int(num_distractors[1]))
        self.progress_reward = float(progress_reward)
        self.target_distance = 0.0
        kwargs.setdefault("max_speed", 1.0)
        super().__init__(**kwargs)

    def _distance(self) -> float:
        """Distance between the agent's and the target's centres, in image widths."""
        return float(np.linalg.norm(self.pos[0] - self.pos[1])) / self.image_size

    def _spawn(self) -> None:
        n, colors, shapes, sizes = self._sample_distractors()
        vel = np.concatenate([np.zeros((1, 2)), self._random_velocities(n + 1)])
        self._set_objects([AGENT_COLOR, self.TARGET_COLOR, *colors], [_CIRCLE, self.TARGET_SHAPE, *shapes],
                          [self._px(AGENT_SIZE), self._px(9), *sizes], vel)
        self.target_distance = self._distance()

    def _kinds(self) -> list[str]:
        return ["agent", "target"] + ["distractor"] * (len(self.color) - 2)

    def _task(self, delta: np.ndarray) -> tuple[float, bool]:
        distance = self._distance()
        progress = self.progress_reward * (self.target_distance - distance)
        self.target_distance = distance
        if self._overlaps(0, 1):
            self.is_success = True
            return 1.0 + progress, True
        return progress, False


class ObjectPushEnv(ObjectEnv):
    """Push the target (red square) into the goal region (grey square).

    The target only moves when the agent pushes it (it moves by the agent's displacement while they
    overlap); the goal is static; 1–2 distractors move freely. Success (+1, episode ends) when the
    target's centre lies inside the goal region.

    :param num_distractors: ``(low, high)`` inclusive range of distractor counts.
    :param goal_size: goal side in pixels at resolution 64.
    :param kwargs: see :class:`ObjectEnv`.
    """

    def __init__(self, num_distractors: tuple[int, int] = (1, 2), goal_size: int = 16, **kwargs: Any) -> None:
        self.num_distractors = (int(num_distractors[0]), int(num_distractors[1]))
        self.goal_size = goal_size
        super().__init__(**kwargs)

    def _spawn(self) -> None:
        n, colors, shapes, sizes = self._sample_distractors()
        vel = np.concatenate([np.zeros((3, 2)), self._random_velocities(n)])
        # object 1 = goal, object 2 = target (kept away from walls so it can be pushed anywhere)
        margins = [0.0, 0.0, 8.0 * self.scale] + [0.0] * n
        self._set_objects([AGENT_COLOR, GOAL_COLOR, 0, *colors], [_CIRCLE, _SQUARE, _SQUARE, *shapes],
                          [self._px(AGENT_SIZE), self._px(self.goal_size), self._px(9), *sizes], vel, margins)

    def _kinds(self) -> list[str]:
        return ["agent", "goal", "target"] + ["distractor"] * (len(self.color) - 3)

    def _after_agent_move(self, delta: np.ndarray) -> None:
        if np.any(delta) and self._overlaps(0, 2):
            self.pos[2] += delta
            self._clip(2)

    def _task(self, delta: np.ndarray) -> tuple[float, bool]:
        if np.all(np.abs(self.pos[2] - self.pos[1]) <= self.size[1] / 2.0):
            self.is_success = True
            return 1.0, True
        return 0.0, False


class OddOneOutEnv(ObjectEnv):
    """Relational task: of 4 objects, 3 share a property and 1 differs; touch the odd one.

    With ``odd_property="color"`` all 4 share one shape and 3 share a colour; with ``"shape"`` all
    4 share one colour and 3 share a shape; ``"either"`` picks one per episode. Touching the odd
    one: +1, success, episode ends. Touching another: ``wrong_reward``, episode ends.

    The default layout follows the published odd-one-out task (OCRL, Yoon et al. 2023): the agent
    starts in the centre and every object starts at least ``spacing`` pixels clear of the others and
    of the agent, so a walk straight at the odd object rarely brushes another one and success
    measures identification. ``agent_start="random", spacing=2`` gives the crowded layout used
    before (a third of the straight walks touch another object, so success also needs avoidance).

    :param odd_property: ``"color"``, ``"shape"`` or ``"either"``.
    :param num_objects: objects besides the agent (>= 3).
    :param wrong_reward: reward for touching a wrong object.
    :param agent_start: ``"centre"`` or ``"random"``.
    :param spacing: least free space between two objects' boxes at reset, in pixels at resolution 64.
    :param kwargs: see :class:`ObjectEnv` (``max_speed`` defaults to 0.5 here).
    """

    def __init__(self, odd_property: str = "color", num_objects: int = 4, wrong_reward: float = -0.1,
                 agent_start: str = "centre", spacing: float = 5.0, **kwargs: Any) -> None:
        if odd_property not in ("color", "shape", "either"):
            raise ValueError(f"odd_property must be 'color', 'shape' or 'either', got {odd_property!r}")
        if not 3 <= num_objects <= MAX_OBJECTS - 1:
            raise ValueError(f"num_objects must be in 3..7, got {num_objects}")
        if agent_start not in ("centre", "random"):
            raise ValueError(f"agent_start must be 'centre' or 'random', got {agent_start!r}")
        if not 0.0 <= spacing <= 12.0:
            raise ValueError(f"spacing must be in [0, 12] pixels (more leaves no room for 4 objects), got {spacing}")
        self.odd_property, self.num_objects, self.wrong_reward = odd_property, num_objects, wrong_reward
        self.agent_start, self.spacing = agent_start, float(spacing)
        kwargs.setdefault("max_speed", 0.5)
        super().__init__(**kwargs)

    def _spawn(self) -> None:
        rng = self.np_random
        n = self.num_objects
        prop = self.odd_property if self.odd_property != "either" else ("color", "shape")[int(rng.integers(2))]
        odd = int(rng.integers(n))
        if prop == "color":
            common, other = rng.choice(NUM_OBJECT_COLORS, size=2, replace=False)
            colors = np.full(n, common)
            colors[odd] = other
            shapes = np.full(n, int(rng.integers(NUM_SHAPES)))
        else:
            common, other = rng.choice(NUM_SHAPES, size=2, replace=False)
            shapes = np.full(n, common)
            shapes[odd] = other
            colors = np.full(n, int(rng.integers(NUM_OBJECT_COLORS)))
        self.odd_index = odd + 1
        vel = np.concatenate([np.zeros((1, 2)), self._random_velocities(n)])
        size = self._px(11)
        self._set_objects([AGENT_COLOR, *colors], [_CIRCLE, *shapes], [self._px(AGENT_SIZE)] + [size] * n, vel,
                          gap=self.spacing, agent_at_centre=self.agent_start == "centre")

    def _kinds(self) -> list[str]:
        return ["agent"] + ["odd" if i == self.odd_index else "common" for i in range(1, len(self.color))]

    def _task(self, delta: np.ndarray) -> tuple[float, bool]:
        if self._overlaps(0, self.odd_index):
            self.is_success = True
            return 1.0, True
        if any(self._overlaps(0, j) for j in range(1, len(self.color)) if j != self.odd_index):
            return float(self.wrong_reward), True
        return 0.0, False

"""Ground-truth object masks for environments this project did not write.

Every source gives, per frame, an integer *instance* label map ``(H, W)`` at the frame's native
resolution (0 = background) and a *category* index per label (``-1`` for labels not in use), so that
segmentation metrics and per-category object recall (:func:`psb_rl.metrics.object_recall`) can score
a model on them. Labels are stable within an episode: one object keeps its label in every frame.

- **MiniGrid** (:class:`MiniGridMasks`): derived exactly from ``env.unwrapped.grid``, ``agent_pos``,
  ``agent_dir``, ``tile_size`` and the highlight of the agent's view, with MiniGrid's own tile renderer.
  An object's mask is exactly the pixels of its tile that differ from an empty floor tile rendered with the
  same highlight (so grid lines and the highlight are background); the agent's mask is its triangle
  (where it is drawn over an object, such as an open door or the goal, those pixels are the agent's).
  Movable objects (key, ball, box, door, goal) are one instance each; static tiles (wall, lava, floor) are
  grouped into 4-connected components of one kind and colour, each component one instance (an outer wall
  is one object, not one per tile). Categories: :data:`MINIGRID_CATEGORIES`.
- **Atari** (:class:`OCAtariMasks`): OCAtari's RAM-extracted object list, each object's bounding box
  filled (later objects drawn over earlier ones), categories = OCAtari's object classes of the game
  (HUD objects left out). OCAtari is the ``atari-gt`` extra (``pip install -e ".[dev,atari-gt]"``, which
  ``make install`` runs), installed beside the project: both run on numpy 1.26.
- **PSB/** environments carry their own masks (``return_masks=True``) and categories
  (``info["mask_categories"]``, names in :data:`psb_rl.envs.object_envs.OBJECT_KINDS`).

The wrappers put ``info["masks"]`` (int32 ``(H, W)``) and ``info["mask_categories"]`` (int16
``(MAX_LABELS + 1,)``, index = label, ``-1`` padded to a fixed length so vector envs can stack it) into
the reset and every step info, as the PSB environments do; :func:`with_ground_truth` adds the right one.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import Any

import gymnasium as gym
import numpy as np

#: Most instance labels one frame may hold (masks are stored as uint8).
MAX_LABELS: int = 255
#: Categories of MiniGrid ground truth, in index order.
MINIGRID_CATEGORIES: tuple[str, ...] = ("agent", "wall", "floor", "door", "key", "ball", "box", "goal", "lava")
#: MiniGrid object types grouped into connected components (they never move).
MINIGRID_STATIC: frozenset[str] = frozenset({"wall", "floor", "lava"})


def pad_categories(categories: Sequence[int], length: int = MAX_LABELS + 1) -> np.ndarray:
    """Category index per label as int16 ``(length,)``, ``-1`` beyond the given labels.

    :param categories: category index of labels ``0..L-1`` (label 0, the background, is ``-1``).
    :param length: output length.
    """
    if len(categories) > length:
        raise ValueError(f"{len(categories) - 1} object labels in one episode exceed the limit of {length - 1}")
    out = np.full(length, -1, dtype=np.int16)
    out[: len(categories)] = categories
    return out


def boxes_to_masks(boxes: Sequence[tuple[float, float, float, float]], shape: tuple[int, int]) -> np.ndarray:
    """Fill bounding boxes into an instance label map; box ``k`` gets label ``k + 1`` and later boxes are
    drawn over earlier ones.

    :param boxes: ``(x, y, w, h)`` in pixels (x to the right, y down), clipped to the frame.
    :param shape: ``(H, W)`` of the frame.
    :return: int32 ``(H, W)`` labels, 0 = background.
    """
    masks = np.zeros(shape, dtype=np.int32)
    height, width = shape
    for label, (x, y, w, h) in enumerate(boxes, start=1):
        x0, y0 = max(0, round(x)), max(0, round(y))
        x1, y1 = min(width, round(x + w)), min(height, round(y + h))
        if x1 > x0 and y1 > y0:
            masks[y0:y1, x0:x1] = label
    return masks


class _MaskWrapper(gym.Wrapper):
    """Puts ``info["masks"]`` and ``info["mask_categories"]`` into the reset and every step info."""

    #: The name of each category index (read by collection for the rollout manifest).
    mask_category_names: tuple[str, ...] = ()

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        self._new_episode()
        return obs, self._add_masks(info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        obs, reward, terminated, truncated, info = self.env.step(action)
        return obs, reward, terminated, truncated, self._add_masks(info)

    def _add_masks(self, info: dict[str, Any]) -> dict[str, Any]:
        masks, categories = self.masks()
        return {**info, "masks": masks, "mask_categories": pad_categories(categories)}

    def _new_episode(self) -> None:
        raise NotImplementedError

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """Instance labels int32 ``(H, W)`` of the current frame and the category of each label ``(L,)``."""
        raise NotImplementedError


# ------------------------------------------------------------------------------------------ MiniGrid
class MiniGridLabeller:
    """Instance masks of a MiniGrid env's current frame, with labels kept stable over an episode.

    Call :meth:`reset` at every new episode, then the labeller on the env after each reset and step.
    """

    def __init__(self) -> None:
        self._tiles: dict[tuple[Any, ...], tuple[np.ndarray, np.ndarray]] = {}
        self.reset()

    def reset(self) -> None:
        """Forget the labels of the previous episode."""
        self._labels: dict[Any, int] = {}
        self._categories: list[int] = [-1]
        self._held: list[Any] = []  # keeps labelled objects alive, so their id() is never reused

    def _label(self, key: Any, category: str) -> int:
        if key not in self._labels:
            self._labels[key] = len(self._categories)
            self._categories.append(MINIGRID_CATEGORIES.index(category))
        return self._labels[key]

    def _tile(self, obj: Any, agent_dir: int | None, highlight: bool, tile_size: int) -> tuple[np.ndarray, np.ndarray]:
        """``(object pixels, agent pixels)`` of one tile, bool ``(tile_size, tile_size)`` each."""
        key = (obj.encode() if obj is not None else None, agent_dir, highlight, tile_size)
        if key not in self._tiles:
            from minigrid.core.grid import Grid

            floor = Grid.render_tile(None, None, highlight, tile_size)
            drawn = Grid.render_tile(obj, agent_dir, highlight, tile_size)
            agent = np.zeros(floor.shape[:2], dtype=bool)
            if agent_dir is not None:
                agent = (Grid.render_tile(None, agent_dir, highlight, tile_size) != floor).any(axis=-1)
            self._tiles[key] = ((drawn != floor).any(axis=-1) & ~agent, agent)
        return self._tiles[key]

    def __call__(self, env: gym.Env) -> tuple[np.ndarray, np.ndarray]:
        """Masks of ``env``'s current ``render()`` frame.

        :param env: a MiniGrid env (any wrappers; ``env.unwrapped`` is read).
        :return: int32 ``(height · tile_size, width · tile_size)`` instance labels (0 = background) and the
            category index of every label so far in the episode, int16 ``(L,)`` (``-1`` for label 0).
        :raises ValueError: for ``agent_pov=True`` renders (partial views are not supported).
        """
        from scipy.ndimage import label as connected_components

        base = env.unwrapped
        if getattr(base, "agent_pov", False):
            raise ValueError("MiniGrid ground truth needs the full render; create the env with agent_pov=False")
        grid, size = base.grid, int(base.tile_size)
        highlight = _minigrid_highlight(base) if base.highlight else np.zeros((grid.width, grid.height), bool)
        agent_pos = tuple(int(v) for v in base.agent_pos)
        kinds = np.full((grid.width, grid.height), "", dtype=object)
        for i in range(grid.width):
            for j in range(grid.height):
                cell = grid.get(i, j)
                if cell is not None and cell.type in MINIGRID_STATIC:
                    kinds[i, j] = f"{cell.type}/{cell.color}"
        components: dict[tuple[int, int], Any] = {}
        for kind in {k for k in kinds.ravel() if k}:
            ids, count = connected_components(kinds == kind)
            for component in range(1, count + 1):
                cells = np.argwhere(ids == component)
                anchor = tuple(int(v) for v in cells[0])
                for cell in cells:
                    components[tuple(int(v) for v in cell)] = (kind, anchor)
        masks = np.zeros((grid.height * size, grid.width * size), dtype=np.int32)
        for j in range(grid.height):
            for i in range(grid.width):
                obj = grid.get(i, j)
                here = (i, j) == agent_pos
                if obj is None and not here:
                    continue
                object_px, agent_px = self._tile(obj, int(base.agent_dir) if here else None, bool(highlight[i, j]), size)
                tile = masks[j * size : (j + 1) * size, i * size : (i + 1) * size]
                if obj is not None:
                    if obj.type in MINIGRID_STATIC:
                        key: Any = components[(i, j)]
                    else:
                        key = id(obj)
                        if key not in self._labels:
                            self._held.append(obj)
                    tile[object_px] = self._label(key, obj.type)
                if here:
                    tile[agent_px] = self._label("agent", "agent")
        return masks, np.asarray(self._categories, dtype=np.int16)


def _minigrid_highlight(base: Any) -> np.ndarray:
    """Which cells ``get_full_render`` highlights (the agent's visible view), bool ``(width, height)``."""
    _, vis_mask = base.gen_obs_grid()
    f_vec, r_vec = base.dir_vec, base.right_vec
    top_left = base.agent_pos + f_vec * (base.agent_view_size - 1) - r_vec * (base.agent_view_size // 2)
    highlight = np.zeros((base.width, base.height), dtype=bool)
    for vis_j in range(base.agent_view_size):
        for vis_i in range(base.agent_view_size):
            if not vis_mask[vis_i, vis_j]:
                continue
            abs_i, abs_j = top_left - (f_vec * vis_j) + (r_vec * vis_i)
            if 0 <= abs_i < base.width and 0 <= abs_j < base.height:
                highlight[abs_i, abs_j] = True
    return highlight


class MiniGridMasks(_MaskWrapper):
    """Ground-truth masks of a MiniGrid env's ``render()`` frames (module docstring).

    Create the env with ``render_mode="rgb_array"``; ``highlight=False`` gives frames without the lighter
    agent view, which otherwise moves over the floor with the agent (the masks treat it as background).

    :param env: a MiniGrid env.
    """

    mask_category_names = MINIGRID_CATEGORIES

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        self.labeller = MiniGridLabeller()

    def _new_episode(self) -> None:
        self.labeller.reset()

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        return self.labeller(self.env)


def is_minigrid(env: gym.Env) -> bool:
    """Whether ``env`` is a MiniGrid env (without importing minigrid unless it is loaded)."""
    import sys

    if "minigrid" not in sys.modules:
        return False
    from minigrid.minigrid_env import MiniGridEnv

    return isinstance(env.unwrapped, MiniGridEnv)


# --------------------------------------------------------------------------------------------- Atari
def ocatari_available() -> bool:
    """Whether the optional ``ocatari`` package can be imported."""
    import importlib.util

    return importlib.util.find_spec("ocatari") is not None


def atari_game_name(env_id: str) -> str:
    """OCAtari's game name of an ALE id: ``ALE/Pong-v5`` → ``Pong``, ``PongNoFrameskip-v4`` → ``Pong``."""
    name = env_id.split("/", 1)[1] if "/" in env_id else env_id
    return name.split("-")[0].split("NoFrameskip")[0].split("Deterministic")[0]


class OCAtariDetector:
    """OCAtari's RAM object extraction for one game (the ``mode="ram"`` path of ``ocatari.core.OCAtari``).

    :param game: OCAtari's game name, e.g. ``"Pong"``.
    """

    def __init__(self, game: str) -> None:
        import importlib

        try:
            importlib.import_module(f"ocatari.ram.{game.lower()}")
        except ModuleNotFoundError as e:
            raise ValueError(f"OCAtari has no RAM extraction for {game!r}; no Atari ground truth for it") from e
        from ocatari.ram.extract_ram_info import detect_objects_ram, get_max_objects, init_objects

        self.game = game
        self._init, self._detect = init_objects, detect_objects_ram
        self.categories: tuple[str, ...] = tuple(get_max_objects(game, False))
        self.reset()

    def reset(self) -> None:
        """Fresh object slots for a new episode."""
        self.objects = self._init(self.game, False)

    def __call__(self, ram: np.ndarray) -> list[tuple[str, tuple[float, float, float, float]]]:
        """Visible objects of the frame whose RAM is ``ram``: ``(category, (x, y, w, h))`` in draw order."""
        self._detect(self.objects, ram, self.game, False)
        return [(o.category, tuple(o.xywh)) for o in self.objects
                if o is not None and o.category in self.categories and getattr(o, "visible", True)
                and o.w > 0 and o.h > 0]


class OCAtariMasks(_MaskWrapper):
    """Ground-truth masks of an ALE env from OCAtari's object list (module docstring).

    Labels follow OCAtari's object slots: slot ``k`` of the game's object list keeps label ``k + 1`` over
    the episode. Boxes are in the 210×160 screen's pixels, the resolution of RGB observations and
    ``render()``.

    :param env: an ALE env (``ale_py``) with RGB frames.
    :param detector: ``ram -> [(category, (x, y, w, h)), ...]`` with ``categories`` and ``reset()``;
        default :class:`OCAtariDetector` for the env's game.
    """

    def __init__(self, env: gym.Env, detector: Callable[..., Any] | None = None) -> None:
        super().__init__(env)
        if detector is None:
            if env.spec is None:
                raise ValueError("OCAtariMasks needs an env made with gymnasium.make (to know the game)")
            detector = OCAtariDetector(atari_game_name(env.spec.id))
        self.detector = detector
        self.mask_category_names = tuple(detector.categories)

    def _new_episode(self) -> None:
        self.detector.reset()

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        ale = self.env.unwrapped.ale
        objects = self.detector(ale.getRAM())
        height, width = ale.getScreenDims()
        masks = boxes_to_masks([box for _, box in objects], (int(height), int(width)))
        categories = [-1] + [self.mask_category_names.index(category) for category, _ in objects]
        return masks, np.asarray(categories, dtype=np.int16)


def is_atari(env: gym.Env) -> bool:
    """Whether ``env`` is an ALE env."""
    return hasattr(env.unwrapped, "ale")


# ------------------------------------------------------------------------------------------- choose
def with_ground_truth(env: gym.Env) -> gym.Env:
    """``env`` wrapped with the ground-truth source that fits it, or unchanged when none does (or when it
    already puts masks into its info, as the PSB environments do).

    MiniGrid → :class:`MiniGridMasks`; ALE with OCAtari installed → :class:`OCAtariMasks`.
    """
    if is_minigrid(env):
        return MiniGridMasks(env)
    if is_atari(env) and ocatari_available() and env.spec is not None:
        try:
            return OCAtariMasks(env)
        except ValueError:
            return env
    return env


def ground_truth_factory(make: Callable[[], gym.Env]) -> Callable[[], gym.Env]:
    """A picklable env factory (for vector-env workers) that wraps ``make()`` with :func:`with_ground_truth`."""
    return functools.partial(_make_with_ground_truth, make)


def _make_with_ground_truth(make: Callable[[], gym.Env]) -> gym.Env:
    return with_ground_truth(make())


def mask_category_names(env: gym.Env) -> tuple[str, ...]:
    """The category names of ``env``'s ground-truth masks (``()`` when it has none)."""
    try:
        return tuple(env.get_wrapper_attr("mask_category_names"))
    except AttributeError:
        return ()


__all__ = ["MINIGRID_CATEGORIES", "MiniGridLabeller", "MiniGridMasks", "OCAtariDetector", "OCAtariMasks",
           "boxes_to_masks", "ground_truth_factory", "mask_category_names", "with_ground_truth"]

"""Pretraining recipes per kind of environment: ``train_psb.py --preset builtin|minigrid|atari``.

A preset names the environment it was made for, the frame pipeline its frames go through (source, crop,
resize), how to collect its pretraining data, the overrides of :class:`psb_rl.training.TrainArgs` (model
and loss fields alike) and the time budget it is meant for. Flags given explicitly on the command line
override the preset. With no rollouts at ``--data``, ``train_psb.py`` collects them as the preset says.
On another env of a grid family (``--preset minigrid --env MiniGrid-Unlock-v0``) the frame size follows the
env's grid, one token per cell (:func:`fit_to_env`). The numbers behind each recipe are in
docs/real_env_binding.md.
"""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Preset:
    """One pretraining recipe.

    :param env: gymnasium id the recipe was made for.
    :param source: ``"observation"`` or ``"render"``: where frames come from.
    :param crop: pixels removed from the ``(top, bottom, left, right)`` of each frame before resizing.
    :param resize: stored frame side after cropping.
    :param env_kwargs: extra ``gym.make`` arguments.
    :param collect_episodes: episodes of the random policy collected for pretraining.
    :param max_episode_steps: episode cap during collection (None: the env's own).
    :param max_minutes: the wall-clock budget the recipe is meant for (one CPU thread).
    :param train: overrides of :class:`psb_rl.training.TrainArgs` fields.
    :param cell_pixels: for envs drawn on a grid of cells (MiniGrid): pixels per cell after resizing. The frames
        of any env of the family are then resized to its grid at this many pixels per cell, and the model
        gets one token per cell (``feature_stride = cell_pixels``) and a decoder grid of one cell per token.
    :param env_crops: the crop of each env of the family the recipe knows (Atari: the playfield without the
        score bar and the maker's logo), used for that env when ``--crop`` is not given.
    :param env_train: overrides of ``train`` for an env of the family (Atari: more slots where a game shows
        more objects), each used unless given on the command line.
    """

    env: str
    source: str
    crop: tuple[int, int, int, int]
    resize: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    collect_episodes: int = 100
    max_episode_steps: int | None = None
    max_minutes: float = 10.0
    train: dict[str, Any] = field(default_factory=dict)
    cell_pixels: int | None = None
    env_crops: dict[str, tuple[int, int, int, int]] = field(default_factory=dict)
    env_train: dict[str, dict[str, Any]] = field(default_factory=dict)


#: ``(top, bottom, left, right)`` pixels cut off the 210 x 160 ALE screen: score bars, the maker's logo and
#: the black column left of the playfield go; every object OCAtari reports stays inside.
ATARI_CROPS: dict[str, tuple[int, int, int, int]] = {
    "ALE/Pong-v5": (34, 16, 0, 0),  # score bar and the top and bottom walls
    "ALE/Skiing-v5": (30, 28, 8, 0),  # gate count and clock; logo; black left column
    "ALE/Tennis-v5": (24, 30, 8, 0),  # score; logo; black left column
}

#: Slots per Atari game beyond the preset's 5 (the background and four objects): Skiing shows up to ten
#: objects at once (the skier, trees, moguls and two gates of two flags), Tennis four (two players, the ball
#: and its shadow) and a spare slot.
ATARI_SLOTS: dict[str, dict[str, Any]] = {
    "ALE/Skiing-v5": {"num_slots": 11},
    "ALE/Tennis-v5": {"num_slots": 6},
}


PRESETS: dict[str, Preset] = {
    # PSB's own world (flat-coloured shapes on black): patch colour in the bottom-up values, one colour and
    # one box per slot, slot 0 on the black floor, the other slots matched to the one-colour regions.
    "builtin": Preset(
        env="PSB/RandomObjects-v0", source="observation", crop=(0, 0, 0, 0), resize=64, collect_episodes=300,
        max_minutes=10.0,
        train={"colour_values": True, "decoder": "blob", "background_slot": True, "difference_input": True,
               "foreground_weight": 5.0, "background_alignment": 1.0, "component_alignment": 1.0,
               "foreground_reference": "colour", "batch_size": 8, "clip_len": 4, "warmup_steps": 50},
    ),
    # MiniGrid rendered without the agent-view highlight, one token per grid cell (5 cells of 8 px); every
    # slot draws one colour and one box; slot 0 draws the median frame (floor, outer walls, goal) and is
    # pulled off everything drawn over the floor's colour; the other slots are matched to its one-colour
    # regions.
    "minigrid": Preset(
        env="MiniGrid-DoorKey-5x5-v0", source="render", crop=(0, 0, 0, 0), resize=40,
        env_kwargs={"highlight": False}, collect_episodes=150, max_episode_steps=100, max_minutes=20.0,
        cell_pixels=8,
        train={"image_size": 40, "feature_stride": 8, "decoder_grid": 5, "num_slots": 8, "batch_size": 8,
               "clip_len": 4, "warmup_steps": 50, "decoder": "blob", "background_slot": True,
               "difference_input": True, "foreground_weight": 5.0, "background_alignment": 1.0,
               "component_alignment": 1.0, "foreground_reference": "colour", "foreground_threshold": 0.15},
    ),
    # Atari playfield (Pong: the score bar and the top and bottom walls cropped), a static background drawn
    # by slot 0 from the frames' median, objects as coloured boxes matched to the one-colour regions that
    # differ from the median; foreground pixels weigh more.
    "atari": Preset(
        env="ALE/Pong-v5", source="observation", crop=ATARI_CROPS["ALE/Pong-v5"], resize=64, collect_episodes=16,
        max_episode_steps=800, max_minutes=30.0, env_crops=ATARI_CROPS, env_train=ATARI_SLOTS,
        train={"image_size": 64, "num_slots": 5, "batch_size": 8, "clip_len": 4, "warmup_steps": 50,
               "decoder": "blob", "background_slot": True, "difference_input": True, "foreground_weight": 5.0,
               "background_alignment": 0.3, "component_alignment": 1.0},
    ),
}


def get_preset(name: str) -> Preset:
    """The preset called ``name``, or a clear error listing the known ones."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {sorted(PRESETS)}")
    return PRESETS[name]


def explicit_flags(argv: Sequence[str]) -> set[str]:
    """Dataclass field names given explicitly in ``argv`` (``--kebab-case`` and ``--no-kebab-case``)."""
    names = set()
    for token in argv:
        if token.startswith("--"):
            flag = token[2:].split("=", 1)[0]
            names.add(flag.replace("-", "_"))
            if flag.startswith("no-"):
                names.add(flag[3:].replace("-", "_"))
    return names


def collection_fields(preset: Preset) -> dict[str, Any]:
    """The :class:`psb_rl.training.TrainArgs` collection fields of the preset (what ``--data`` is collected with)."""
    return {"pixels": "render" if preset.source == "render" else "obs", "crop": tuple(preset.crop),
            "resize": [preset.resize], "env_kwargs": json.dumps(preset.env_kwargs) if preset.env_kwargs else None,
            "collect_episodes": preset.collect_episodes, "collect_max_episode_steps": preset.max_episode_steps}


def env_slug(env_id: str) -> str:
    """A folder name for an env id: ``"MiniGrid-Unlock-v0"`` → ``"minigrid-unlock-v0"``, ``"ALE/Pong-v5"`` →
    ``"ale-pong-v5"``."""
    return re.sub(r"[^a-z0-9.]+", "-", env_id.split(":")[-1].lower()).strip("-")


def apply_preset(args: Any, preset: Preset, explicit: set[str] = frozenset()) -> Any:
    """``args`` (a TrainArgs) with the preset's overrides, except the fields in ``explicit``.

    The preset sets the env, the time budget, the model and loss fields, and how ``--data`` is collected
    (:func:`collection_fields`); ``--data`` and ``--out`` default to ``data/<env>`` and ``runs/<env>``
    (:func:`env_slug`), so a preset run never reads another env's rollouts.

    :param args: parsed arguments.
    :param preset: the recipe.
    :param explicit: field names the user set on the command line (they win over the preset).
    :return: a new TrainArgs.
    """
    known = {f.name for f in dataclasses.fields(args)}
    unknown = sorted(set(preset.train) - known)
    if unknown:
        raise ValueError(f"preset sets unknown fields {unknown}")
    changes = {k: v for k, v in preset.train.items() if k not in explicit}
    changes.update({k: v for k, v in collection_fields(preset).items() if k in known and k not in explicit})
    if "env" in known and "env" not in explicit:
        changes["env"] = preset.env
    if "max_minutes" in known and "max_minutes" not in explicit:
        changes["max_minutes"] = preset.max_minutes
    env_id = args.env if "env" in explicit else preset.env
    for name, root in (("data", "data"), ("out", "runs")):
        if name in known and name not in explicit:
            changes[name] = f"{root}/{env_slug(env_id)}"
    return dataclasses.replace(args, **changes)


def grid_cells(env_id: str, env_kwargs: dict[str, Any] | None = None,
               gym_packages: Sequence[str] = ()) -> tuple[int, int] | None:
    """``(rows, columns)`` of the cell grid an env is drawn on (MiniGrid's ``height`` and ``width``), or None for
    envs without one.

    :param env_id: gymnasium id. :param env_kwargs: its ``gym.make`` arguments.
    :param gym_packages: packages to import that register it.
    """
    from psb_rl.environments import make_env

    env = make_env(env_id, env_kwargs, gym_packages=gym_packages)
    try:
        base = env.unwrapped
        if hasattr(base, "grid") and isinstance(getattr(base, "width", None), int) \
                and isinstance(getattr(base, "height", None), int):
            return int(base.height), int(base.width)
        return None
    finally:
        env.close()


def fit_to_env(args: Any, preset: Preset, explicit: set[str] = frozenset()) -> Any:
    """``args`` (after :func:`apply_preset`) with the frame size the env calls for, except the fields in ``explicit``.

    An env in the preset's ``env_crops`` gets its own crop, one in ``env_train`` its own training fields. For a
    preset with ``cell_pixels`` on an env drawn on a grid (any MiniGrid env), frames are resized to the grid at
    ``cell_pixels`` per cell, non-square where the grid is (``MiniGrid-Unlock-v0``, 6 x 11 cells at 8 px:
    48 x 88), with one token per cell and a decoder grid of one cell per token. For presets whose model size is
    their stored frame size, an explicit ``--resize`` also sets the model's size.

    :param args: a TrainArgs. :param preset: the recipe. :param explicit: field names given on the command line.
    :return: a new TrainArgs.
    """
    from psb_rl.cli import parse_env_kwargs

    changes: dict[str, Any] = {}
    if args.env in preset.env_crops and "crop" not in explicit:
        changes["crop"] = tuple(preset.env_crops[args.env])
    changes.update({k: v for k, v in preset.env_train.get(args.env, {}).items() if k not in explicit})
    follows_frames = preset.train.get("image_size") == preset.resize
    if preset.cell_pixels and "resize" not in explicit:
        cells = grid_cells(args.env, parse_env_kwargs(args.env_kwargs), args.gym_packages)
        if cells is not None:
            rows, columns = cells
            height, width = rows * preset.cell_pixels, columns * preset.cell_pixels
            changes["resize"] = [height] if height == width else [height, width]
            changes.update({k: v for k, v in (("feature_stride", preset.cell_pixels),
                                              ("decoder_grid", min(rows, columns))) if k not in explicit})
    resize = changes.get("resize", args.resize)
    if follows_frames and resize and "image_size" not in explicit:
        changes["image_size"] = resize[0] if len(resize) == 1 else tuple(resize)
    return dataclasses.replace(args, **changes)


__all__ = ["ATARI_CROPS", "ATARI_SLOTS", "PRESETS", "Preset", "apply_preset", "collection_fields", "env_slug",
           "explicit_flags", "fit_to_env", "get_preset", "grid_cells"]

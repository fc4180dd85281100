"""Pretraining recipes per kind of environment: ``train_psb.py --preset builtin|minigrid|atari``.

A preset names the environment it was made for, the frame pipeline its frames go through (source, crop,
resize), how to collect its pretraining data, the overrides of :class:`psb_rl.training.TrainArgs` (model
and loss fields alike) and the time budget it is meant for. Flags given explicitly on the command line
override the preset. The numbers behind each recipe are in docs/real_env_binding.md.
"""

from __future__ import annotations

import dataclasses
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
        train={"image_size": 40, "feature_stride": 8, "decoder_grid": 5, "num_slots": 8, "batch_size": 8,
               "clip_len": 4, "warmup_steps": 50, "decoder": "blob", "background_slot": True,
               "difference_input": True, "foreground_weight": 5.0, "background_alignment": 1.0,
               "component_alignment": 1.0, "foreground_reference": "colour", "foreground_threshold": 0.15},
    ),
    # Atari playfield (Pong: the score bar and the top and bottom walls cropped), a static background drawn
    # by slot 0 from the frames' median, objects as coloured boxes matched to the one-colour regions that
    # differ from the median; foreground pixels weigh more.
    "atari": Preset(
        env="ALE/Pong-v5", source="observation", crop=(34, 16, 0, 0), resize=64, collect_episodes=16,
        max_episode_steps=800, max_minutes=30.0,
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


def apply_preset(args: Any, preset: Preset, explicit: set[str] = frozenset()) -> Any:
    """``args`` (a TrainArgs) with the preset's overrides, except the fields in ``explicit``.

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
    if "env" in known and "env" not in explicit:
        changes["env"] = preset.env
    if "max_minutes" in known and "max_minutes" not in explicit:
        changes["max_minutes"] = preset.max_minutes
    return dataclasses.replace(args, **changes)


__all__ = ["PRESETS", "Preset", "apply_preset", "explicit_flags", "get_preset"]

"""Built-in object-centric environments, registered under the ``PSB/`` namespace by ``import psb_rl``.

>>> import gymnasium as gym, psb_rl
>>> env = gym.make("PSB/OddOneOut-v0", obs_mode="state", return_masks=True)

Ids (all ``max_episode_steps=100``, ``Discrete(5)`` actions, kwargs of :class:`psb_rl.envs.object_envs.ObjectEnv`
plus each class's own):

- ``PSB/RandomObjects-v0``: 3–6 moving objects and the agent, no task (pretraining data).
- ``PSB/ObjectReach-v0``: touch the red square.
- ``PSB/ObjectPush-v0``: push the red square into the grey goal region.
- ``PSB/OddOneOut-v0``: touch the object that differs from the other three.
"""

from __future__ import annotations

import gymnasium as gym

from psb_rl.envs.object_envs import (
    MAX_OBJECTS,
    NUM_FEATURES,
    ObjectEnv,
    ObjectPushEnv,
    ObjectReachEnv,
    OddOneOutEnv,
    RandomObjectsEnv,
)

MAX_EPISODE_STEPS: int = 100

ENV_IDS: tuple[str, ...] = (
    "PSB/RandomObjects-v0",
    "PSB/ObjectReach-v0",
    "PSB/ObjectPush-v0",
    "PSB/OddOneOut-v0",
)

_ENTRY_POINTS = {
    "PSB/RandomObjects-v0": "psb_rl.envs.object_envs:RandomObjectsEnv",
    "PSB/ObjectReach-v0": "psb_rl.envs.object_envs:ObjectReachEnv",
    "PSB/ObjectPush-v0": "psb_rl.envs.object_envs:ObjectPushEnv",
    "PSB/OddOneOut-v0": "psb_rl.envs.object_envs:OddOneOutEnv",
}


def register_envs() -> None:
    """Register every ``PSB/`` id with gymnasium (idempotent)."""
    for env_id, entry_point in _ENTRY_POINTS.items():
        if env_id not in gym.registry:
            gym.register(id=env_id, entry_point=entry_point, max_episode_steps=MAX_EPISODE_STEPS)


register_envs()

__all__ = [
    "ENV_IDS",
    "MAX_EPISODE_STEPS",
    "MAX_OBJECTS",
    "NUM_FEATURES",
    "ObjectEnv",
    "ObjectPushEnv",
    "ObjectReachEnv",
    "OddOneOutEnv",
    "RandomObjectsEnv",
    "register_envs",
]

"""psb-rl: object slots for reinforcement-learning agents.

Pretrain PSB (Parallelized Spatiotemporal Binding) on environment videos, then stream it as a
causal encoder inside the agent's loop. Public names are imported lazily so that ``import psb_rl``
stays cheap (e.g. in forked environment workers) and optional pieces (SB3) load only when used; the
built-in environments (:mod:`psb_rl.envs`) register their ``PSB/`` ids with gymnasium on import.
"""

from __future__ import annotations

import importlib
from typing import Any

from psb_rl.envs import register_envs

__version__ = "0.1.0"

register_envs()

_EXPORTS = {
    "PSBConfig": "psb_rl.config",
    "PSBAutoencoder": "psb_rl.model",
    "PSBOutput": "psb_rl.model",
    "save_checkpoint": "psb_rl.checkpoint",
    "load_checkpoint": "psb_rl.checkpoint",
    "CheckpointError": "psb_rl.checkpoint",
    "preprocess_frames": "psb_rl.preprocessing",
    "FramePipeline": "psb_rl.frames",
    "StreamingEncoder": "psb_rl.streaming",
    "StreamingState": "psb_rl.streaming",
    "PSBObservationWrapper": "psb_rl.wrappers",
    "VecPSBWrapper": "psb_rl.wrappers",
    "SlotTransformerExtractor": "psb_rl.extractors",
    "RolloutDataset": "psb_rl.data",
    "collect_rollouts": "psb_rl.rollouts",
    "binding_health": "psb_rl.health",
    "collapse_warning": "psb_rl.health",
    "object_recall": "psb_rl.metrics",
    "MiniGridMasks": "psb_rl.ground_truth",
    "OCAtariMasks": "psb_rl.ground_truth",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'psb_rl' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

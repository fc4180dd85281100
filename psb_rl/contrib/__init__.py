"""Experimental additions outside the core API.

:mod:`psb_rl.contrib.mirror`: PPO that also trains on the mirror images of each rollout
(:class:`MirroredPPO`), the slot wrapper that streams the mirrored frames (:class:`MirroredVecPSBWrapper`)
and the extractor that acts on the plain copy (:class:`FirstCopyExtractor`). It fits arenas that are
symmetric under left-right and up-down mirrors, such as the built-in ``PSB/`` environments.
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "MirroredPPO": "psb_rl.contrib.mirror",
    "MirroredVecPSBWrapper": "psb_rl.contrib.mirror",
    "FirstCopyExtractor": "psb_rl.contrib.mirror",
}

__all__ = list(_EXPORTS)


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'psb_rl.contrib' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)

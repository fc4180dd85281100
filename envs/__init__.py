"""The built-in environments now live in :mod:`psb_rl.envs` (``import psb_rl`` registers the ``PSB/`` ids);
this folder re-exports them so that ``import envs`` keeps working from the repository root."""

from psb_rl.envs import *  # noqa: F403
from psb_rl.envs import __all__  # noqa: F401

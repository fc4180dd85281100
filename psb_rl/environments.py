"""Environment creation shared by every command line: any gymnasium id, registered on demand.

Ids of well-known namespaces import their package when first used: ``PSB/…`` (this project's
``psb_rl``), ``ALE/…`` (``ale_py``), ``MiniGrid-…`` / ``BabyAI-…`` (``minigrid``). Any other package that
registers ids on import is named with ``gym_packages`` (``--gym-packages`` on the command lines, as
in RL Zoo), or in the id itself as ``"package:Id-v0"``.

:func:`make_env` builds one environment; :func:`make_frame_env` one whose observations are the
frames of a :class:`psb_rl.frames.FramePipeline` source (``env.render()`` frames for MiniGrid or
CartPole, the usual Atari wrappers in RGB for ``ALE/`` ids).
"""

from __future__ import annotations

import importlib
from collections.abc import Sequence
from typing import Any, SupportsFloat

import gymnasium as gym

KNOWN_NAMESPACES: dict[str, str] = {"PSB/": "psb_rl", "ALE/": "ale_py", "MiniGrid-": "minigrid", "BabyAI-": "minigrid"}
"""Id prefix → the package whose import registers those ids."""


class UnknownEnvError(ValueError):
    """A gymnasium id that no imported package registers (the message names the fix)."""


def import_gym_packages(packages: Sequence[str] = ()) -> None:
    """Import packages that register gymnasium ids (``--gym-packages``).

    :param packages: module names, e.g. ``["highway_env"]``.
    :raises UnknownEnvError: when one is not installed.
    """
    for name in packages:
        try:
            module = importlib.import_module(name)
        except ImportError as error:
            raise UnknownEnvError(f"--gym-packages {name}: cannot import it ({error}); install it with pip") from None
        if name == "ale_py":
            gym.register_envs(module)


def ensure_registered(env_id: str, gym_packages: Sequence[str] = ()) -> None:
    """Import whatever registers ``env_id``, then check that gymnasium knows it.

    :param env_id: a gymnasium id (``"package:Id"`` ids are imported by gymnasium itself).
    :param gym_packages: more packages to import first.
    :raises UnknownEnvError: one line naming the fix (install the package, or ``--gym-packages PKG``).
    """
    import_gym_packages(gym_packages)
    if ":" in env_id:
        module, _, name = env_id.partition(":")
        import_gym_packages([module])
        env_id = name
    for prefix, package in KNOWN_NAMESPACES.items():
        if env_id.startswith(prefix):
            try:
                module = importlib.import_module(package)
            except ImportError:
                extra = "ale-py" if package == "ale_py" else package
                raise UnknownEnvError(f"{env_id} needs the {package} package: pip install {extra}") from None
            if package == "ale_py":
                gym.register_envs(module)
            break
    try:
        gym.spec(env_id)
    except gym.error.Error as error:
        hint = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise UnknownEnvError(
            f"unknown environment id {env_id!r} ({hint}). If a package registers it, name it with "
            f"--gym-packages PKG (or write the id as 'PKG:{env_id}'); ids of PSB/, ALE/, MiniGrid- and BabyAI- "
            "are registered automatically"
        ) from None


def make_env(env_id: str, env_kwargs: dict[str, Any] | None = None, max_episode_steps: int | None = None,
             render: bool = False, gym_packages: Sequence[str] = ()) -> gym.Env:
    """Create one environment (also in vector-env workers, so it registers the id itself).

    :param env_id: gymnasium id.
    :param env_kwargs: extra ``gym.make`` kwargs.
    :param max_episode_steps: override the registered time limit.
    :param render: create it with ``render_mode="rgb_array"``.
    :param gym_packages: packages to import first (see :func:`ensure_registered`).
    :return: the environment.
    """
    ensure_registered(env_id, gym_packages)
    kwargs = dict(env_kwargs or {})
    if render:
        kwargs["render_mode"] = "rgb_array"
    if max_episode_steps is not None:
        kwargs["max_episode_steps"] = max_episode_steps
    try:
        return gym.make(env_id, **kwargs)
    except TypeError as error:
        if "environment creator" not in str(error):  # gymnasium's wording for arguments the env does not take
            raise
        raise ValueError(f"{env_id} does not take these arguments ({' '.join(str(error).split())}); check "
                         "--env-kwargs") from None


def is_atari(env: gym.Env) -> bool:
    """Whether ``env`` is an Arcade Learning Environment game."""
    return type(env.unwrapped).__module__.startswith("ale_py")


def atari_wrappers(env: gym.Env, noop_max: int = 30, terminal_on_life_loss: bool = True,
                   clip_reward: bool = True) -> gym.Env:
    """The usual Atari training wrappers, keeping the RGB frames untouched.

    No-op starts, FIRE on reset (games that need it), a life loss ends the episode for learning and
    rewards clipped to their sign. Frame skipping is left to the environment (``ALE/…-v5`` repeats each
    action 4 frames, with sticky actions), so frames are exactly those recorded by
    ``pretrain/collect_rollouts.py``; no greyscale, no resize (the frame pipeline resizes).

    :param env: an ALE environment.
    :param noop_max: at most this many no-op actions after a reset.
    :param terminal_on_life_loss: signal the end of an episode when a life is lost.
    :param clip_reward: clip rewards to {-1, 0, 1}.
    :return: the wrapped environment.
    """
    from stable_baselines3.common.atari_wrappers import (
        ClipRewardEnv,
        EpisodicLifeEnv,
        FireResetEnv,
        NoopResetEnv,
    )

    meanings = env.unwrapped.get_action_meanings()  # type: ignore[attr-defined]
    if noop_max > 0 and meanings[0] == "NOOP":
        env = NoopResetEnv(env, noop_max=noop_max)
    if terminal_on_life_loss:
        env = EpisodicLifeEnv(env)
    if len(meanings) >= 3 and meanings[1] == "FIRE":
        env = FireResetEnv(env)
    if clip_reward:
        env = ClipRewardEnv(env)
    return env


def make_frame_env(env_id: str, source: str = "observation", env_kwargs: dict[str, Any] | None = None,
                   max_episode_steps: int | None = None, gym_packages: Sequence[str] = (),
                   atari: bool = True) -> gym.Env:
    """One environment whose observations are frames of ``source`` (for a frame pipeline).

    :param env_id: gymnasium id.
    :param source: ``"observation"`` (the observations are images) or ``"render"`` (observations are
        replaced by ``env.render()`` frames, e.g. MiniGrid's grid, CartPole's cart).
    :param env_kwargs: extra ``gym.make`` kwargs.
    :param max_episode_steps: override the registered time limit.
    :param gym_packages: packages to import first.
    :param atari: apply :func:`atari_wrappers` to ALE games.
    :return: the environment.
    """
    env = make_env(env_id, env_kwargs, max_episode_steps, render=source == "render", gym_packages=gym_packages)
    if atari and is_atari(env):
        env = atari_wrappers(env)
    if is_minigrid(env):
        env = EpisodeSuccess(env)
    if source == "render":
        env = gym.wrappers.AddRenderObservation(env, render_only=True)
    return env


def is_minigrid(env: gym.Env) -> bool:
    """Whether ``env`` is a MiniGrid (or BabyAI) environment."""
    return type(env.unwrapped).__module__.startswith("minigrid")


class EpisodeSuccess(gym.Wrapper):
    """Report ``info["is_success"]`` at the end of each episode for environments that do not: success is an
    episode that terminates with a positive reward (MiniGrid's goal reached; its reward is positive only
    then, and a time-out truncates with reward 0).

    :param env: the environment (one that sets ``is_success`` itself keeps its own value).
    """

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        """Step, adding ``is_success`` when the episode ends."""
        obs, reward, terminated, truncated, info = self.env.step(action)
        if (terminated or truncated) and "is_success" not in info:
            info = {**info, "is_success": bool(terminated and float(reward) > 0)}
        return obs, reward, terminated, truncated, info


class MiniGridObjects(gym.ObservationWrapper):
    """A MiniGrid environment's fully observed symbolic grid as a set of objects ``(cells, F)``: the oracle
    observation for agents compared with slot and pixel agents.

    Each grid cell is one row: one-hot object type, colour and door state (MiniGrid's own encoding), the
    agent's direction (one-hot, on the agent's cell), whether the agent carries something (on its cell), the
    cell's position (x, y in [-1, 1]) and, last, whether the cell holds anything but floor (``present``, for
    :class:`psb_rl.SlotTransformerExtractor`'s ``mask_feature_index=-1``).

    :param env: a MiniGrid environment.
    """

    def __init__(self, env: gym.Env) -> None:
        super().__init__(env)
        import numpy as np
        from minigrid.core.constants import COLOR_TO_IDX, OBJECT_TO_IDX, STATE_TO_IDX

        self._sizes = (len(OBJECT_TO_IDX), len(COLOR_TO_IDX), len(STATE_TO_IDX), 4)
        self._one_hot = [np.eye(n, dtype=np.float32) for n in self._sizes]  # kinds, colours, states, directions
        self._agent, self._floor = OBJECT_TO_IDX["agent"], (OBJECT_TO_IDX["unseen"], OBJECT_TO_IDX["empty"])
        unwrapped = env.unwrapped
        width, height = unwrapped.width, unwrapped.height  # type: ignore[attr-defined]
        x, y = np.meshgrid(np.linspace(-1, 1, width), np.linspace(-1, 1, height), indexing="ij")
        self._position = np.stack([x.ravel(), y.ravel()], axis=-1).astype(np.float32)  # rows in grid.encode order
        features = sum(self._sizes) + 1 + 2 + 1
        self.observation_space = gym.spaces.Box(-1.0, 1.0, (width * height, features), np.float32)

    def observation(self, observation: Any) -> Any:
        """:return: float32 ``(cells, F)``."""
        import numpy as np

        unwrapped = self.env.unwrapped
        grid = unwrapped.grid.encode().reshape(-1, 3)  # type: ignore[attr-defined]  # (x * height + y, 3)
        x, y = unwrapped.agent_pos  # type: ignore[attr-defined]
        agent = int(x) * unwrapped.height + int(y)  # type: ignore[attr-defined]
        kinds, colours, states, directions = self._one_hot
        direction = np.zeros((len(grid), 4), np.float32)
        direction[agent] = directions[unwrapped.agent_dir]  # type: ignore[attr-defined]
        grid[agent] = (self._agent, 0, 0)
        carrying = np.zeros((len(grid), 1), np.float32)
        carrying[agent] = float(unwrapped.carrying is not None)  # type: ignore[attr-defined]
        present = ~np.isin(grid[:, 0], self._floor)
        return np.concatenate([kinds[grid[:, 0]], colours[grid[:, 1]], states[grid[:, 2]], direction, carrying,
                               self._position, present[:, None].astype(np.float32)], axis=-1)


def make_state_env(env_id: str, env_kwargs: dict[str, Any] | None = None, max_episode_steps: int | None = None,
                   gym_packages: Sequence[str] = ()) -> gym.Env:
    """One environment whose observations are its ground-truth objects: the built-in ``PSB/`` environments'
    ``obs_mode="state"`` (set it in ``env_kwargs``) or a MiniGrid environment's symbolic grid
    (:class:`MiniGridObjects`).

    :raises ValueError: for environments that expose no object states.
    """
    env = make_env(env_id, env_kwargs, max_episode_steps, gym_packages=gym_packages)
    if is_minigrid(env):
        return MiniGridObjects(EpisodeSuccess(env))
    if not isinstance(env.observation_space, gym.spaces.Box) or len(env.observation_space.shape) != 2:
        env.close()
        raise ValueError(f"--encoder state needs ground-truth object states, which the PSB/ and MiniGrid "
                         f"environments give; {env_id} has none: use --encoder slots or pixels")
    return env


class FramePipelineObservation(gym.ObservationWrapper):
    """Observations made by a :class:`psb_rl.frames.FramePipeline`: uint8 ``(H, W, 3)`` frames (newest of a
    stack, cropped, resized), e.g. for a pixels agent that should see the frames a PSB model was trained on.

    :param env: environment with image observations (any layout of :data:`psb_rl.frames.LAYOUTS`).
    :param pipeline: the frame pipeline (its source is not used: wrap render frames first, see
        :func:`make_frame_env`).
    """

    def __init__(self, env: gym.Env, pipeline: Any) -> None:
        super().__init__(env)
        import numpy as np

        self.pipeline = pipeline
        self._layout = pipeline.check_space(env.observation_space, channel_stack=False)  # RGBA: alpha dropped
        probe = pipeline.apply(np.zeros(env.observation_space.shape, env.observation_space.dtype), self._layout)
        self.observation_space = gym.spaces.Box(0, 255, probe.shape, np.uint8)

    def observation(self, observation: Any) -> Any:
        """:return: the frame as the pipeline makes it, uint8 ``(H, W, 3)``."""
        return self.pipeline.apply(observation, self._layout)


__all__ = [
    "KNOWN_NAMESPACES",
    "EpisodeSuccess",
    "FramePipelineObservation",
    "MiniGridObjects",
    "UnknownEnvError",
    "atari_wrappers",
    "ensure_registered",
    "import_gym_packages",
    "is_minigrid",
    "make_env",
    "make_frame_env",
    "make_state_env",
]

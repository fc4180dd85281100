"""Observation wrappers that turn pixel observations into PSB slots with a frozen streaming encoder.

* :class:`PSBObservationWrapper` — a gymnasium ``ObservationWrapper`` for one environment (batch 1).
  Works with ``make_vec_env(..., wrapper_class=...)`` and inside gymnasium vector envs.
* :class:`VecPSBWrapper` — an SB3 ``VecEnvWrapper`` that encodes all environments in one batched
  call (the fast path). Torch stays in the main process, so it works over ``SubprocVecEnv``.

Both hold the frozen encoder (eval mode, ``requires_grad=False``, ``torch.inference_mode``), so
SB3's ``ortho_init`` and ``policy.set_training_mode`` never touch it. Both warn, once, when the env was made
with other values of the rendering options the checkpoint's frames were recorded with (e.g. MiniGrid's
``highlight``); :class:`PSBObservationWrapper` can set them on the env instead (``env_options="apply"``).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import VecEnv, VecEnvWrapper
from stable_baselines3.common.vec_env.base_vec_env import VecEnvObs, VecEnvStepReturn

from psb_rl.frames import FramePipeline, FramePipelineError, frame_layout, model_frame_pipeline
from psb_rl.model import GEOMETRY_FEATURES, PSBAutoencoder
from psb_rl.utils import resolve_device

CheckpointLike = str | Path | PSBAutoencoder


def load_frozen_encoder(checkpoint: CheckpointLike, device: torch.device | str | None = None,
                        checkpoint_sha256: str | None = None) -> PSBAutoencoder:
    """Load (or take) a PSB model and freeze it: eval mode and ``requires_grad=False``.

    :param checkpoint: a checkpoint path written by :func:`psb_rl.save_checkpoint`, or a
        :class:`psb_rl.PSBAutoencoder` (used as is, moved to ``device`` if one is given).
    :param device: where the model runs (``"auto"``, ``"cpu"``, ``"cuda"``); ``None`` keeps a given model where it is (CPU for a path).
    :param checkpoint_sha256: the SHA-256 the checkpoint file must have (e.g. recorded in an RL Zoo config next to
        its path): another file at that path is refused with :class:`psb_rl.checkpoint.CheckpointError`.
    :return: the frozen model.
    """
    resolved = resolve_device(device) if device is not None else None
    if checkpoint_sha256 is not None:
        if not isinstance(checkpoint, str | Path):
            raise TypeError("checkpoint_sha256 checks a checkpoint file: pass the checkpoint as a path")
        from psb_rl.checkpoint import verify_checkpoint_identity

        verify_checkpoint_identity(checkpoint, checkpoint_sha256, str(checkpoint), owner="this wrapper's configuration")
    if isinstance(checkpoint, PSBAutoencoder):
        model = checkpoint if resolved is None else checkpoint.to(resolved)
    elif isinstance(checkpoint, str | Path):
        from psb_rl.checkpoint import load_checkpoint

        model = load_checkpoint(checkpoint, device=resolved or "cpu")
    else:
        raise TypeError(
            f"checkpoint must be a path to a PSB checkpoint or a psb_rl.PSBAutoencoder, got {type(checkpoint).__name__}"
        )
    model.eval()
    model.requires_grad_(False)
    return model


def _image_layout(space: gym.Space, owner: str) -> str:
    """Validate an image observation space and say its layout: ``"hwc"`` (uint8) or ``"chw"``.

    :raises ValueError: for anything that is not an RGB image, with a hint on how to get one.
    """
    if isinstance(space, gym.spaces.Box) and len(space.shape) == 3:
        if space.dtype == np.uint8 and space.shape[-1] == 3:
            return "hwc"
        if space.shape[0] == 3 and (space.dtype == np.uint8 or np.issubdtype(space.dtype, np.floating)):
            return "chw"
    raise ValueError(
        f"{owner} needs RGB image observations: a Box of uint8 (H, W, 3) (or (3, H, W)); got {space}. "
        "For an environment with state observations, render frames with "
        "gymnasium.wrappers.AddRenderObservation(env, render_only=True) (make it with render_mode='rgb_array'); "
        "for the built-in PSB/ environments pass obs_mode='pixels'."
    )


def _check_space_bounds(space: gym.spaces.Box, owner: str) -> None:
    """Refuse float image spaces whose declared bounds leave [0, 1] (e.g. ``high=255``): the encoder reads
    float frames as values in [0, 1].

    :raises ValueError: saying how to scale the frames.
    """
    if space.dtype == np.uint8:
        return
    low, high = np.asarray(space.low, dtype=np.float64), np.asarray(space.high, dtype=np.float64)
    finite_low, finite_high = low[np.isfinite(low)], high[np.isfinite(high)]
    if (finite_low.size and finite_low.min() < 0) or (finite_high.size and finite_high.max() > 1):
        raise ValueError(
            f"{owner} reads float frames as values in [0, 1], but the observation space declares "
            f"[{finite_low.min() if finite_low.size else -np.inf:g}, {finite_high.max() if finite_high.size else np.inf:g}]. "
            "Divide 0..255 frames by 255 (e.g. gymnasium.wrappers.TransformObservation with a Box(0, 1) space), "
            "or give uint8 frames."
        )


def _to_model_frames(frames: np.ndarray, layout: str) -> np.ndarray:
    """Bring a batch of frames into a layout ``preprocess_frames`` accepts (uint8 HWC or float CHW)."""
    frames = np.asarray(frames)
    if layout == "chw" and frames.dtype == np.uint8:
        return np.ascontiguousarray(np.moveaxis(frames, -3, -1))
    if layout == "hwc" and frames.dtype != np.uint8 and frames.ndim >= 3:  # float (H, W, 3): channels first
        return np.ascontiguousarray(np.moveaxis(frames, -1, -3))
    return frames


GEOMETRY_CHOICES = (False, True, "only")
"""What a slot agent's observation holds per slot: the slot vector (``False``), the vector and its geometry
(``True``), or the geometry alone (``"only"``: :meth:`psb_rl.PSBAutoencoder.slot_geometry` replaces the
vector)."""


def check_geometry(geometry: bool | str) -> bool | str:
    """``geometry`` if it is one of :data:`GEOMETRY_CHOICES`, else a ValueError naming them."""
    if not (isinstance(geometry, bool) or geometry == "only"):
        raise ValueError(f"geometry must be False, True or 'only', got {geometry!r}")
    return geometry


def slot_observation_space(model: PSBAutoencoder, geometry: bool | str = False) -> gym.spaces.Box:
    """The observation space of a slot agent: ``(N, D)``, ``(N, D + G)`` with the slot geometry, or ``(N, G)``
    with the geometry alone.

    :param model: the PSB model. :param geometry: one of :data:`GEOMETRY_CHOICES`.
    """
    config = model.config
    vector = 0 if check_geometry(geometry) == "only" else config.slot_dim
    features = vector + (len(GEOMETRY_FEATURES) if geometry else 0)
    return gym.spaces.Box(low=-np.inf, high=np.inf, shape=(config.num_slots, features), dtype=np.float32)


def slot_observations(model: PSBAutoencoder, slots: torch.Tensor, geometry: bool | str = False,
                      frames: np.ndarray | torch.Tensor | None = None) -> np.ndarray:
    """What a slot agent observes: the slots ``(B, N, D)``, with each slot's geometry appended or in their
    place when asked.

    :param model: the PSB model that made the slots. :param slots: ``(B, N, D)``.
    :param geometry: one of :data:`GEOMETRY_CHOICES` (``G`` geometry features per slot).
    :param frames: the frames the slots were made from (needed with ``geometry``), as the streaming encoder
        took them: uint8 ``(B, H, W, 3)`` or float ``(B, 3, H, W)``.
    :return: float32 ``(B, N, D)``, ``(B, N, D + G)`` or ``(B, N, G)``.
    """
    if check_geometry(geometry):
        if frames is None:
            raise ValueError("slot geometry is read off the frames: pass the frames the slots were made from")
        from psb_rl.preprocessing import preprocess_frames

        with torch.inference_mode():
            video = preprocess_frames(frames, model.config.image_size, device=slots.device)
            shape = model.slot_geometry(slots, video)
            slots = shape if geometry == "only" else torch.cat([slots.float(), shape], dim=-1)
    return slots.float().cpu().numpy()


PipelineLike = FramePipeline | dict[str, Any] | None


def resolve_frame_pipeline(frame_pipeline: PipelineLike, model: PSBAutoencoder) -> FramePipeline:
    """The frame pipeline a wrapper applies: the given one (a :class:`psb_rl.frames.FramePipeline` or its
    ``to_dict``), else the model's (:func:`psb_rl.frames.model_frame_pipeline`: the checkpoint's)."""
    if frame_pipeline is None:
        return model_frame_pipeline(model)
    if isinstance(frame_pipeline, dict):
        return FramePipeline.from_dict(frame_pipeline)
    if isinstance(frame_pipeline, FramePipeline):
        return frame_pipeline
    raise TypeError(f"frame_pipeline must be a psb_rl.frames.FramePipeline, its dict or None, got {type(frame_pipeline).__name__}")


def _pipeline_layout(pipeline: FramePipeline, space: gym.Space, owner: str, channel_stack: bool = False) -> str:
    """The layout of observations of ``space`` for ``pipeline``, or a clear error naming ``owner``.

    :param channel_stack: whether frames may be stacked on the channels (SB3's ``VecFrameStack``); otherwise
        ``(H, W, 4)`` observations are RGBA and their alpha channel is dropped (:func:`psb_rl.frames.frame_layout`).
    """
    try:
        return pipeline.check_space(space, f"{owner} observations", channel_stack=channel_stack)
    except FramePipelineError as error:
        hint = ""
        if pipeline.source == "render":
            hint = (" This model's frames come from env.render(): make the env with render_mode='rgb_array' and wrap "
                    "it with gymnasium.wrappers.AddRenderObservation(env, render_only=True) "
                    "(psb_rl.environments.make_frame_env does).")
        raise FramePipelineError(f"{error}.{hint}") from None


def _is_image_space(space: gym.Space) -> bool:
    """Whether observations of ``space`` are frames a pipeline reads (see :func:`psb_rl.frames.frame_layout`)."""
    if not isinstance(space, gym.spaces.Box):
        return False
    try:
        frame_layout(space.shape)
    except FramePipelineError:
        return False
    return True


class RenderingOptionWarning(UserWarning):
    """An env made with other values of a rendering option than the frames a PSB model was pretrained on."""


_UNKNOWN = object()


def _lookup(get: Callable[[str], Any], name: str) -> Any:
    """``get(name)``, or :data:`_UNKNOWN` when the env has no such attribute."""
    try:
        return get(name)
    except (AttributeError, KeyError, IndexError):
        return _UNKNOWN


def rendering_option_mismatches(recorded: dict[str, Any] | None,
                                get: Callable[[str], Any]) -> dict[str, tuple[Any, Any]]:
    """The recorded rendering options an env was made with other values of.

    An option's value is the env's attribute of that name (as MiniGrid keeps ``highlight``), else the argument
    its spec was made with (``env.spec.kwargs``); options the env says nothing about are not compared.

    :param recorded: option name → value the frames were recorded with (``FramePipeline.env_kwargs``).
    :param get: reads one attribute of the (unwrapped) env, e.g. ``env.get_wrapper_attr``; raises
        ``AttributeError`` for missing ones.
    :return: option name → ``(the env's value, the recorded value)``.
    """
    if not recorded:
        return {}
    spec = _lookup(get, "spec")
    spec_kwargs = getattr(spec, "kwargs", None) or {}
    differing = {}
    for name, wanted in recorded.items():
        value = _lookup(get, name)
        if value is _UNKNOWN:
            value = spec_kwargs.get(name, _UNKNOWN)
        if value is not _UNKNOWN and value != wanted:
            differing[name] = (value, wanted)
    return differing


def _first_env_attr(venv: VecEnv, name: str) -> Any:
    """Attribute ``name`` of the first env of ``venv`` (asked first: a subprocess env dies on a missing one)."""
    if not venv.has_attr(name):
        raise AttributeError(name)
    return venv.get_attr(name, 0)[0]


def warn_rendering_options(differing: dict[str, tuple[Any, Any]], owner: str, hint: str = "") -> None:
    """One :class:`RenderingOptionWarning` naming every differing option (nothing when none differ)."""
    if not differing:
        return
    made = ", ".join(f"{name}={value!r}" for name, (value, _) in differing.items())
    wanted = ", ".join(f"{name}={value!r}" for name, (_, value) in differing.items())
    warnings.warn(
        f"{owner}: the env was made with {made}, but this PSB model's frames were recorded with {wanted} (the "
        f"checkpoint's frame pipeline): the encoder sees frames it was not trained on. Make the env with "
        f"gym.make(..., {wanted}){hint}.", RenderingOptionWarning, stacklevel=3)


def _check_declared_shape(frames: np.ndarray, space: gym.Space, owner: str) -> None:
    """Refuse observations whose shape is not the one their space declares (one row per env in ``frames``).

    :raises FramePipelineError: naming both shapes.
    """
    if isinstance(space, gym.spaces.Box) and tuple(frames.shape[1:]) != tuple(space.shape):
        raise FramePipelineError(
            f"{owner}: the environment returned observations of shape {tuple(frames.shape[1:])} but its observation "
            f"space declares {tuple(space.shape)}; make the environment return frames of its declared shape (or "
            "declare the shape it returns)"
        )


def _is_channel_stacked(venv: VecEnv) -> bool:
    """Whether ``venv`` stacks frames on the channels (SB3's ``VecFrameStack`` anywhere in its wrappers)."""
    from stable_baselines3.common.vec_env import VecFrameStack, is_vecenv_wrapped

    return is_vecenv_wrapped(venv, VecFrameStack)


def _pipeline_frames(pipeline: FramePipeline, frames: np.ndarray, layout: str) -> np.ndarray:
    """Frames for the streaming encoder: through ``pipeline`` (uint8, as stored for pretraining), or, for the
    identity pipeline on RGB frames, as they are (float frames keep their values and non-finite checks)."""
    if pipeline == FramePipeline() and layout in ("hwc", "chw"):
        return _to_model_frames(frames, layout)
    return pipeline.apply(np.asarray(frames), layout)


class PSBObservationWrapper(gym.ObservationWrapper, gym.utils.RecordConstructorArgs):
    """Replace each pixel observation by the PSB slots of the episode so far.

    A :class:`psb_rl.StreamingEncoder` with one environment keeps the causal context; ``reset``
    clears it before the first frame of an episode is encoded.

    Frames go through the checkpoint's frame pipeline (:mod:`psb_rl.frames`: newest RGB frame of a stack,
    crop, resize), so the encoder sees them as in pretraining. For a pipeline recorded from ``env.render()``
    and an env without image observations (e.g. MiniGrid made with ``render_mode="rgb_array"``), the
    wrapper encodes ``env.render()``.

    :param env: environment with image observations (RGB, greyscale or frame stacks, see
        :data:`psb_rl.frames.LAYOUTS`), or one that renders them.
    :param checkpoint: PSB checkpoint path, or a :class:`psb_rl.PSBAutoencoder`.
    :param device: torch device of the encoder (default: CPU / the given model's device).
    :param keep_pixels: return ``{"slots": (N, D), "pixels": observation}`` instead of the slots alone.
    :param nonfinite: a frame with NaN or inf values ``"raise"``s, or ``"reset"``s the encoder state with a
        warning (see :class:`psb_rl.StreamingEncoder`).
    :param frame_pipeline: override the checkpoint's frame pipeline (a
        :class:`psb_rl.frames.FramePipeline` or its dict).
    :param geometry: ``True``: append to each slot what it owns in the frame (position, size, shape, colour:
        :meth:`psb_rl.PSBAutoencoder.slot_geometry`), observations ``(N, D + G)``; ``"only"``: the geometry
        in place of the slot vector, ``(N, G)``.
    :param env_options: when the env was made with other values of the pipeline's rendering options
        (``FramePipeline.env_kwargs``), ``"warn"`` once (:class:`RenderingOptionWarning`), or ``"apply"``: set
        them on the env where it keeps them as attributes (MiniGrid's ``highlight``), and for a pipeline recorded
        from ``env.render()`` give an env made without a render mode ``render_mode="rgb_array"`` (for envs made by
        others, e.g. RL Zoo's evaluation env); options it cannot set still warn.
    :param checkpoint_sha256: the SHA-256 of the checkpoint file; another file at ``checkpoint`` is refused. Give it
        in an RL Zoo config, whose ``config.yml`` keeps it, so ``rl_zoo3.enjoy`` refuses a swapped checkpoint.
    """

    def __init__(
        self,
        env: gym.Env,
        checkpoint: CheckpointLike,
        device: torch.device | str | None = None,
        keep_pixels: bool = False,
        nonfinite: str = "raise",
        frame_pipeline: PipelineLike = None,
        geometry: bool | str = False,
        env_options: str = "warn",
        checkpoint_sha256: str | None = None,
    ) -> None:
        gym.utils.RecordConstructorArgs.__init__(self, checkpoint=checkpoint, device=device, keep_pixels=keep_pixels,
                                                 nonfinite=nonfinite, frame_pipeline=frame_pipeline, geometry=geometry,
                                                 env_options=env_options, checkpoint_sha256=checkpoint_sha256)
        gym.ObservationWrapper.__init__(self, env)
        from psb_rl.streaming import StreamingEncoder

        if env_options not in ("warn", "apply"):
            raise ValueError(f"env_options must be 'warn' or 'apply', got {env_options!r}")
        self.psb_model = load_frozen_encoder(checkpoint, device, checkpoint_sha256)
        self.frame_pipeline = resolve_frame_pipeline(frame_pipeline, self.psb_model)
        self._render = self.frame_pipeline.source == "render" and not _is_image_space(env.observation_space)
        self._match_rendering_options(env, env_options)
        if self._render:
            if getattr(env, "render_mode", None) != "rgb_array":
                raise FramePipelineError(
                    "PSBObservationWrapper: this model's frames come from env.render(), but the env's render_mode is "
                    f"{getattr(env, 'render_mode', None)!r}; make it with gym.make(..., render_mode='rgb_array')"
                )
            self._layout = "hwc"
        else:
            self._layout = _pipeline_layout(self.frame_pipeline, env.observation_space, "PSBObservationWrapper")
            _check_space_bounds(env.observation_space, "PSBObservationWrapper")
        self.encoder = StreamingEncoder(self.psb_model, num_envs=1, device=device, nonfinite=nonfinite)  # type: ignore[arg-type]
        self.keep_pixels = keep_pixels
        self.geometry = check_geometry(geometry)
        slots = slot_observation_space(self.psb_model, geometry)
        if keep_pixels:
            self.observation_space = gym.spaces.Dict({"slots": slots, "pixels": env.observation_space})
        else:
            self.observation_space = slots

    def _match_rendering_options(self, env: gym.Env, env_options: str) -> None:
        """Warn about (or, with ``"apply"``, set) the rendering options ``env`` was made with other values of."""
        differing = rendering_option_mismatches(self.frame_pipeline.env_kwargs, env.get_wrapper_attr)
        if env_options == "apply":
            base = env.unwrapped
            if self._render and getattr(env, "render_mode", None) is None:
                base.render_mode = "rgb_array"  # type: ignore[misc]
            for name in [name for name in differing if hasattr(base, name)]:
                setattr(base, name, differing.pop(name)[1])
        warn_rendering_options(differing, "PSBObservationWrapper",
                               "" if env_options == "apply" else ", or pass env_options='apply' to set them on it")

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        """Reset the environment and the encoder state, then encode the first frame."""
        self.encoder.reset()
        obs, info = self.env.reset(seed=seed, options=options)
        return self.observation(obs), info

    def encode(self, frame: np.ndarray) -> np.ndarray:
        """Advance the encoder by one frame.

        :param frame: one observation of the wrapped environment, e.g. uint8 ``(H, W, 3)``.
        :return: float32 slots ``(N, D)`` (``(N, D + G)`` or ``(N, G)`` with ``geometry``).
        """
        frames = np.asarray(frame)[None]
        if not self._render:
            _check_declared_shape(frames, self.env.observation_space, "PSBObservationWrapper")
        frames = self.encoder.check_finite(frames)  # before the pipeline: nonfinite="reset" acts on this env
        layout = frame_layout(frames.shape[1:], channel_stack=False) if self._render else self._layout  # RGB(A)
        frames = _pipeline_frames(self.frame_pipeline, frames, layout)
        with torch.inference_mode():
            slots = self.encoder.step(frames)
        return slot_observations(self.psb_model, slots, self.geometry, frames)[0]

    def observation(self, observation: np.ndarray) -> np.ndarray | dict[str, np.ndarray]:
        """:param observation: a frame. :return: slots ``(N, D)`` float32 (or a dict with the pixels)."""
        slots = self.encode(self.env.render() if self._render else observation)
        if self.keep_pixels:
            return {"slots": slots, "pixels": observation}
        return slots


class VecPSBWrapper(VecEnvWrapper):
    """Encode the frames of all environments of a VecEnv into slots with one batched streaming encoder.

    For environments that finished in a step, ``infos[i]["terminal_observation"]`` (the last frame of
    the finished episode) is replaced by its slots, computed with that episode's history; the env's
    encoder state is then reset and the new episode's first frame (the returned observation) encoded.
    Cost per step: one batched encoder step for all envs plus one for the envs that finished.

    Frames go through the checkpoint's frame pipeline (:mod:`psb_rl.frames`), as in
    :class:`PSBObservationWrapper`; for a pipeline recorded from ``env.render()`` the envs' observations must
    be those frames (``gymnasium.wrappers.AddRenderObservation(env, render_only=True)``, as
    :func:`psb_rl.environments.make_frame_env` builds).

    :param venv: SB3 VecEnv with image observations (RGB ``(H, W, 3)``, channels-first, greyscale or frame
        stacks; no ``VecTransposeImage`` needed). Any VecEnv works, e.g. ``SubprocVecEnv``: torch runs
        only in this process.
    :param checkpoint: PSB checkpoint path, or a :class:`psb_rl.PSBAutoencoder` (shared, not copied).
    :param device: torch device of the encoder.
    :param nonfinite: a frame with NaN or inf values ``"raise"``s (naming the env), or ``"reset"``s that env's
        encoder state with a warning (see :class:`psb_rl.StreamingEncoder`).
    :param frame_pipeline: override the checkpoint's frame pipeline (a
        :class:`psb_rl.frames.FramePipeline` or its dict).
    :param geometry: ``True``: append to each slot what it owns in the frame (position, size, shape, colour:
        :meth:`psb_rl.PSBAutoencoder.slot_geometry`), observations ``(B, N, D + G)``; ``"only"``: the geometry
        in place of the slot vector, ``(B, N, G)``.
    :param terminal_observations: ``"all"``: every finished env's ``infos[i]["terminal_observation"]``
        holds its slots (what off-policy algorithms store). ``"truncated"``: only for episodes cut by a time
        limit (``infos[i]["TimeLimit.truncated"]``), the only ones on-policy algorithms such as PPO read (to
        bootstrap the value); the others' entry is removed. A step in which no env needs it then costs one
        encoder call instead of two.

    It warns once (:class:`RenderingOptionWarning`) when the envs were made with other values of the
    pipeline's rendering options than pretraining's frames.
    """

    def __init__(
        self, venv: VecEnv, checkpoint: CheckpointLike, device: torch.device | str | None = None,
        nonfinite: str = "raise", frame_pipeline: PipelineLike = None, geometry: bool | str = False,
        terminal_observations: str = "all",
    ) -> None:
        from psb_rl.streaming import StreamingEncoder

        if terminal_observations not in ("all", "truncated"):
            raise ValueError(f"terminal_observations must be 'all' or 'truncated', got {terminal_observations!r}")
        self.terminal_observations = terminal_observations

        self.psb_model = load_frozen_encoder(checkpoint, device)
        self.frame_pipeline = resolve_frame_pipeline(frame_pipeline, self.psb_model)
        self._layout = _pipeline_layout(self.frame_pipeline, venv.observation_space, "VecPSBWrapper",
                                        channel_stack=_is_channel_stacked(venv))
        warn_rendering_options(
            rendering_option_mismatches(self.frame_pipeline.env_kwargs, lambda name: _first_env_attr(venv, name)),
            "VecPSBWrapper")
        _check_space_bounds(venv.observation_space, "VecPSBWrapper")
        self.encoder = StreamingEncoder(self.psb_model, num_envs=venv.num_envs, device=device,
                                        nonfinite=nonfinite)  # type: ignore[arg-type]
        self.geometry = check_geometry(geometry)
        super().__init__(venv, observation_space=slot_observation_space(self.psb_model, geometry))

    def _step_encoder(self, frames: np.ndarray, mask: np.ndarray | None = None) -> np.ndarray:
        """One encoder step. :param frames: ``(B, ...)`` frames. :param mask: bool ``(B,)``: only these
        envs advance (None = all). :return: float32 ``(B, N, D)`` or ``(B, N, D + G)`` (rows outside ``mask``
        undefined)."""
        frames = np.asarray(frames)
        _check_declared_shape(frames, self.venv.observation_space, "VecPSBWrapper")
        frames = self.encoder.check_finite(frames, mask)  # before the pipeline: nonfinite="reset" acts per env
        frames = _pipeline_frames(self.frame_pipeline, frames, self._layout)
        with torch.inference_mode():
            slots = self.encoder.step(frames) if mask is None else self.encoder.step(frames, mask=mask)
        return slot_observations(self.psb_model, slots, self.geometry, frames)

    def _reset_encoder(self, mask: np.ndarray) -> None:
        """Forget the history of the envs where ``mask`` (bool ``(B,)``) is True."""
        self.encoder.reset(mask=mask)

    def reset(self) -> VecEnvObs:
        """Reset all environments and all encoder states. :return: slots ``(B, N, D)`` float32."""
        self.encoder.reset()
        obs = self._from_venv(self.venv.reset)
        return self._step_encoder(obs)

    def _from_venv(self, call: Any) -> Any:
        """``call()`` (the VecEnv's reset or step_wait), with SB3's "could not broadcast" (an env returned frames
        of another shape than its space declares) turned into a clear error."""
        try:
            return call()
        except ValueError as error:
            if "broadcast" not in str(error):
                raise
            raise FramePipelineError(
                f"VecPSBWrapper: an environment returned observations that do not fit its declared observation space "
                f"{self.venv.observation_space} ({' '.join(str(error).split())}); make the environment return frames "
                "of its declared shape (or declare the shape it returns)"
            ) from None

    def step_wait(self) -> VecEnvStepReturn:
        """:return: slots ``(B, N, D)`` float32, rewards, dones and infos (terminal observations as slots)."""
        obs, rewards, dones, infos = self._from_venv(self.venv.step_wait)
        done = np.asarray(dones, dtype=bool)
        if not done.any():
            return self._step_encoder(obs), rewards, dones, infos
        if self.terminal_observations == "truncated":
            for i in np.flatnonzero(done):
                if not infos[i].get("TimeLimit.truncated", False):
                    infos[i].pop("terminal_observation", None)
            if not any("terminal_observation" in infos[i] for i in np.flatnonzero(done)):
                # no terminal slots wanted: the finished envs start afresh within the one batched step
                self._reset_encoder(done)
                return self._step_encoder(obs), rewards, dones, infos
        # 1) Advance every env; finished envs see their last frame (old state).
        frames = np.array(obs, copy=True)
        has_terminal = np.zeros_like(done)
        for i in np.flatnonzero(done):
            terminal = infos[i].get("terminal_observation")
            if terminal is not None:
                frames[i] = terminal
                has_terminal[i] = True
        slots = self._step_encoder(frames)
        for i in np.flatnonzero(has_terminal):
            infos[i]["terminal_observation"] = slots[i].copy()
        # 2) Clear the finished envs' state and encode their new first frame (only they advance).
        self._reset_encoder(done)
        first = self._step_encoder(obs, mask=done)
        slots[done] = first[done]
        return slots, rewards, dones, infos

    def close(self) -> None:
        """Close the wrapped VecEnv."""
        self.venv.close()

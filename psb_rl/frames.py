"""One frame pipeline shared by collection, pretraining and the agent: :class:`FramePipeline`.

A pipeline says where frames come from (the observation or ``env.render()``), what is cropped off,
and the size they are resized to, and the environment's keyword arguments that change its frames (e.g.
MiniGrid's ``highlight``). Collection records it in the rollout manifest, training copies it
into the checkpoint, and :class:`psb_rl.PSBObservationWrapper`, :class:`psb_rl.VecPSBWrapper` and
``agents/train_ppo.py`` apply the checkpoint's pipeline, so an agent sees frames exactly as
pretraining did.

Observations are turned into one RGB frame first (see :func:`frame_layout`): greyscale frames are
repeated to RGB and frame stacks (SB3's ``VecFrameStack``, gymnasium's ``FrameStackObservation``,
``make_atari_env``'s ``(H, W, 1)``) give their newest frame.

>>> pipeline = FramePipeline(crop=(34, 16, 0, 0), size=(80, 80), input_size=(210, 160))
>>> pipeline.apply(np.zeros((5, 210, 160, 3), np.uint8)).shape
(5, 80, 80, 3)
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import gymnasium as gym
import numpy as np

from psb_rl.sizes import Size, resize_masks, size_hw

SOURCES = ("observation", "render")
NOT_FRAME_OPTIONS = frozenset({"render_mode", "return_masks", "max_episode_steps", "obs_mode"})
"""``gym.make`` arguments a pipeline never records as rendering options: the pipeline's source sets the render
mode, masks and time limits leave frames as they are, and the agent scripts set the built-in envs' ``obs_mode``."""
MAX_STACK = 32
"""Largest frame-stack depth :func:`frame_layout` recognises (a leading or trailing axis at most this long)."""

LAYOUTS = {
    "hwc": "(H, W, 3) RGB",
    "hw": "(H, W) greyscale",
    "hw-stack": "(H, W, k) k greyscale frames stacked on the channels (make_atari_env: k = 1; "
                "VecFrameStack: newest last)",
    "hwc-stack": "(H, W, 3k) k RGB frames stacked on the channels (VecFrameStack, newest last)",
    "hwc-rgba": "(H, W, 4) RGBA (the alpha channel is dropped)",
    "chw": "(3, H, W) channels-first RGB (VecTransposeImage)",
    "khwc": "(k, H, W, 3) k RGB frames (FrameStackObservation, newest last)",
    "khw": "(k, H, W) k greyscale frames (FrameStackObservation, newest last)",
    "khw1": "(k, H, W, 1) k greyscale frames (FrameStackObservation, newest last)",
}
"""The observation layouts a pipeline reads, by name; each gives one RGB frame (the newest)."""
_LAYOUT_NDIM = {"hwc": 3, "hw": 2, "hw-stack": 3, "hwc-stack": 3, "hwc-rgba": 3, "chw": 3, "khwc": 4, "khw": 3,
                "khw1": 4}


class FramePipelineError(ValueError):
    """Frames (or an observation space) that a frame pipeline cannot read."""


class FrameDtypeError(FramePipelineError, TypeError):
    """Frames of a dtype no frame path reads (neither uint8 nor float)."""


def frame_layout(shape: tuple[int, ...], channel_stack: bool = True) -> str:
    """Name the layout (a key of :data:`LAYOUTS`) of one observation of shape ``shape``.

    A trailing axis of 3 is RGB; ``3k`` channels are read as ``k`` RGB frames, other small channel
    counts as greyscale frames. A leading axis of 3 is channels-first RGB, another small leading axis a
    ``FrameStackObservation`` stack. So a stack of exactly 3 greyscale frames reads as RGB: stack 4, as usual.

    A trailing axis of 4 is either 4 stacked greyscale frames (SB3's ``VecFrameStack`` over Atari's
    ``(H, W, 1)``) or RGBA; the shape cannot tell. ``channel_stack=False`` says that the observations are not
    stacked on their channels (gymnasium envs stack on a new leading axis), so ``(H, W, 4)`` is RGBA and its
    alpha channel is dropped.

    :param shape: the shape of one observation (no batch axis).
    :param channel_stack: whether frames may be stacked on the channels (SB3's ``VecFrameStack``).
    :return: the layout name.
    :raises FramePipelineError: for shapes that are not images.
    """
    shape = tuple(int(d) for d in shape)
    if len(shape) == 2 and min(shape) > MAX_STACK // 4:
        return "hw"
    if len(shape) == 3:
        first, last = shape[0], shape[-1]
        if last == 3:
            return "hwc"
        if last == 4 and not channel_stack and min(shape[:2]) > MAX_STACK // 4:
            return "hwc-rgba"
        if first == 3:
            return "chw"
        if last <= MAX_STACK and last < min(shape[:2]):
            return "hwc-stack" if last % 3 == 0 else "hw-stack"
        if first <= MAX_STACK and first < min(shape[1:]):
            return "khw"
    if len(shape) == 4 and shape[0] <= MAX_STACK:
        if shape[-1] == 3:
            return "khwc"
        if shape[-1] == 1:
            return "khw1"
    raise FramePipelineError(
        f"observations of shape {shape} are not images a frame pipeline reads; expected one of: "
        + "; ".join(LAYOUTS.values())
    )


def newest_rgb(frames: np.ndarray, layout: str) -> np.ndarray:
    """The newest frame of each observation as channels-last RGB ``(..., H, W, 3)`` (dtype kept).

    :param frames: observations ``(..., *observation_shape)`` of layout ``layout``.
    :param layout: a key of :data:`LAYOUTS`.
    """
    if layout not in LAYOUTS:
        raise FramePipelineError(f"unknown frame layout {layout!r}; expected one of {sorted(LAYOUTS)}")
    if frames.ndim < _LAYOUT_NDIM[layout]:
        raise FramePipelineError(
            f"frames of shape {frames.shape} have fewer axes than the layout {LAYOUTS[layout]}"
        )
    if layout == "hwc":
        return frames
    if layout == "hwc-stack":
        return frames[..., -3:]
    if layout == "hwc-rgba":
        return frames[..., :3]
    if layout == "chw":
        return np.moveaxis(frames, -3, -1)
    if layout == "khwc":
        return frames[..., -1, :, :, :]
    grey = {"hw": lambda f: f, "hw-stack": lambda f: f[..., -1], "khw": lambda f: f[..., -1, :, :],
            "khw1": lambda f: f[..., -1, :, :, 0]}[layout](frames)
    return np.repeat(grey[..., None], 3, axis=-1)


FRAME_VALUES = "frames must be uint8 0..255 or float in [0, 1]"
"""The rule every frame path states when it refuses frames for their dtype or values."""
_RANGE_TOLERANCE = 1e-6


def check_frame_values(frames: Any) -> None:
    """Refuse frames whose dtype or values are not those of frames: uint8 (any value), or float in [0, 1]
    with no NaN or inf. The one check behind :meth:`FramePipeline.apply`, :func:`psb_rl.preprocess_frames`,
    :meth:`psb_rl.PSBAutoencoder.prepare_video` and :class:`psb_rl.StreamingEncoder`, so float frames in
    0..255 are refused on every path rather than clipped to white.

    :param frames: a numpy array or torch tensor of frames (any shape).
    :raises FramePipelineError: naming the dtype or the range found and how to fix it.
    """
    import torch  # imported on use: psb_rl.rollouts stays free of torch unless frames are checked

    if isinstance(frames, np.ndarray):
        if frames.dtype == np.uint8:
            return
        if not np.issubdtype(frames.dtype, np.floating):
            raise FrameDtypeError(f"{FRAME_VALUES}; got dtype {frames.dtype}")
        values = torch.from_numpy(np.ascontiguousarray(frames))
    elif torch.is_tensor(frames):
        if frames.dtype == torch.uint8:
            return
        if not frames.is_floating_point():
            raise FrameDtypeError(f"{FRAME_VALUES}; got dtype {frames.dtype}")
        values = frames.detach()
    else:
        raise FrameDtypeError(f"{FRAME_VALUES}; got a {type(frames).__name__}")
    if values.numel() == 0:
        return
    if not bool(torch.isfinite(values).all()):
        raise FramePipelineError(f"{FRAME_VALUES}; got NaN or infinite values")
    low, high = float(values.min()), float(values.max())
    if low < -_RANGE_TOLERANCE or high > 1.0 + _RANGE_TOLERANCE:
        raise FramePipelineError(
            f"{FRAME_VALUES}; got float values in [{low:g}, {high:g}]. Divide 0..255 frames by 255 (or pass "
            "uint8 frames)"
        )


def _to_uint8(frames: np.ndarray) -> np.ndarray:
    check_frame_values(frames)
    if frames.dtype == np.uint8:
        return frames
    return (np.clip(frames, 0.0, 1.0) * 255.0).round().astype(np.uint8)  # clips only rounding error


def _pair(value: Any, name: str) -> tuple[int, int] | None:
    if value is None:
        return None
    try:
        height, width = size_hw(value)
    except (TypeError, ValueError):
        raise FramePipelineError(f"{name} must be an int or (H, W), got {value!r}") from None
    if height < 1 or width < 1:
        raise FramePipelineError(f"{name} must be positive, got {value!r}")
    return height, width


@dataclass(frozen=True)
class FramePipeline:
    """Where frames come from and how they become the model's frames: crop, then resize.

    :param source: ``"observation"`` (frames are the observations) or ``"render"`` (``env.render()``).
    :param crop: pixels removed from the ``(top, bottom, left, right)`` of each frame.
    :param size: ``(H, W)`` after resizing (an int for a square); None keeps the cropped size.
    :param input_size: ``(H, W)`` of the frames the pipeline was recorded on (before cropping); frames
        of another size are rejected rather than silently cropped and resized. None accepts any size.
    :param env_kwargs: the ``gym.make`` arguments the frames were recorded with (rendering options such as
        MiniGrid's ``highlight``; see :func:`rendering_options`); the agent scripts make their envs with them.
        They say how the env draws its frames, not how the pipeline transforms them, so two pipelines that
        differ only here compare equal. None: none recorded.
    """

    source: str = "observation"
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    size: tuple[int, int] | None = None
    input_size: tuple[int, int] | None = None
    env_kwargs: dict[str, Any] | None = field(default=None, compare=False)

    def __post_init__(self) -> None:
        if self.source not in SOURCES:
            raise FramePipelineError(f"source must be one of {SOURCES}, got {self.source!r}")
        crop = tuple(int(c) for c in self.crop)
        if len(crop) != 4 or min(crop) < 0:
            raise FramePipelineError(f"crop must be 4 non-negative pixel counts (top, bottom, left, right), got {self.crop!r}")
        object.__setattr__(self, "crop", crop)
        object.__setattr__(self, "size", _pair(self.size, "size"))
        object.__setattr__(self, "input_size", _pair(self.input_size, "input_size"))
        if self.env_kwargs is not None and not isinstance(self.env_kwargs, dict):
            raise FramePipelineError(f"env_kwargs must be a dict of gym.make arguments, got {self.env_kwargs!r}")
        object.__setattr__(self, "env_kwargs", rendering_options(self.env_kwargs) or None)
        if self.input_size is not None:
            self.output_size(self.input_size)  # the crop must leave pixels

    # ----------------------------------------------------------------------------- shapes
    def cropped_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of a ``frame_size`` frame after cropping.

        :raises FramePipelineError: when the crop leaves no pixels.
        """
        top, bottom, left, right = self.crop
        height, width = frame_size[0] - top - bottom, frame_size[1] - left - right
        if height < 1 or width < 1:
            raise FramePipelineError(
                f"crop (top, bottom, left, right) = {self.crop} leaves no pixels of a {frame_size[0]}x{frame_size[1]} frame"
            )
        return height, width

    def output_size(self, frame_size: tuple[int, int]) -> tuple[int, int]:
        """``(H, W)`` of the frames this pipeline makes from ``frame_size`` frames."""
        cropped = self.cropped_size(frame_size)
        return self.size if self.size is not None else cropped

    def check_frame_size(self, frame_size: tuple[int, int], what: str = "frames") -> None:
        """Raise a clear error unless frames of ``(H, W)`` = ``frame_size`` are what this pipeline was made for.

        :param frame_size: ``(H, W)`` of one RGB frame (after choosing the newest of a stack).
        :param what: how to name the frames in the message.
        """
        frame_size = (int(frame_size[0]), int(frame_size[1]))
        if self.input_size is not None and frame_size != self.input_size:
            raise FramePipelineError(
                f"{what} are {frame_size[0]}x{frame_size[1]} but this frame pipeline ({self.describe()}) was recorded on "
                f"{self.input_size[0]}x{self.input_size[1]} frames; use the environment (and wrappers) the model was "
                "pretrained on, or pass another frame pipeline explicitly"
            )
        self.cropped_size(frame_size)

    def check_space(self, space: gym.Space, what: str = "observations", channel_stack: bool = True) -> str:
        """Check that observations of ``space`` can feed this pipeline and name their layout.

        :param space: an observation space (``source="observation"``).
        :param what: how to name the observations in the message.
        :param channel_stack: whether frames may be stacked on the channels (see :func:`frame_layout`);
            False reads ``(H, W, 4)`` as RGBA.
        :return: the layout (a key of :data:`LAYOUTS`) to pass to :meth:`apply`.
        :raises FramePipelineError: for non-image spaces or images of another size than recorded.
        """
        hint = ("Use a frame pipeline with source='render' (--pixels render) to read env.render() frames, or wrap "
                "the env with gymnasium.wrappers.AddRenderObservation(env, render_only=True)")
        if not (isinstance(space, gym.spaces.Box) and (space.dtype == np.uint8 or np.issubdtype(space.dtype, np.floating))):
            raise FramePipelineError(f"{what} are {space}, not images (a uint8 or float Box). {hint}")
        try:
            layout = frame_layout(space.shape, channel_stack)
        except FramePipelineError:
            raise FramePipelineError(f"{what} are {space}, not images. {hint}") from None
        rgb_shape = newest_rgb(np.zeros(space.shape, np.uint8), layout).shape
        self.check_frame_size(rgb_shape[:2], what)
        return layout

    # ----------------------------------------------------------------------------- frames
    def apply(self, frames: np.ndarray, layout: str | None = None) -> np.ndarray:
        """Frames as the model is trained on them: newest RGB frame, cropped, resized.

        :param frames: observations ``(..., *observation_shape)`` (uint8, or float in [0, 1]).
        :param layout: the observations' layout (a key of :data:`LAYOUTS`, as :meth:`check_space`
            returns); None reads ``(..., H, W, 3)`` RGB, ``(..., H, W, 4)`` RGBA (alpha dropped) or
            ``(..., H, W, 1)`` greyscale.
        :return: uint8 ``(..., H', W', 3)``. Resizing is the antialiased bilinear filter of
            :mod:`psb_rl.preprocessing`.
        """
        frames = np.asarray(frames)
        if layout is None:
            if frames.ndim < 3 or frames.shape[-1] not in (1, 3, 4):
                raise FramePipelineError(
                    f"frames of shape {frames.shape} are not (..., H, W, 3) RGB, (..., H, W, 4) RGBA or (..., H, W, 1) "
                    "greyscale; pass layout=pipeline.check_space(observation_space) for other layouts (stacks, "
                    "channels-first)"
                )
            layout = {3: "hwc", 4: "hwc-rgba", 1: "hw-stack"}[frames.shape[-1]]
        rgb = _to_uint8(newest_rgb(frames, layout))
        self.check_frame_size(rgb.shape[-3:-1])
        top, bottom, left, right = self.crop
        height, width = rgb.shape[-3:-1]
        rgb = rgb[..., top:height - bottom, left:width - right, :]
        if self.size is None or tuple(rgb.shape[-3:-1]) == self.size:
            return np.ascontiguousarray(rgb)
        import torch  # imported on use: collection workers and psb_rl.rollouts stay free of torch
        import torch.nn.functional as F

        lead = rgb.shape[:-3]
        flat = torch.from_numpy(np.ascontiguousarray(rgb.reshape(-1, *rgb.shape[-3:]))).movedim(-1, -3)
        if flat.shape[0] == 0:
            return np.zeros((*lead, *self.size, 3), np.uint8)
        resized = F.interpolate(flat.float().div_(255.0), size=self.size, mode="bilinear", antialias=True,
                                align_corners=False)
        out = (resized.movedim(-3, -1) * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()
        return out.reshape(*lead, *self.size, 3)

    def apply_masks(self, masks: np.ndarray) -> np.ndarray:
        """Segmentation masks ``(..., H, W)`` (integer labels at the frames' native resolution) cropped and
        resized like the frames, by nearest neighbour: labels never blend.

        :return: masks ``(..., H', W')`` with the input dtype.
        """
        masks = np.asarray(masks)
        if masks.ndim < 2:
            raise FramePipelineError(f"masks must be (..., H, W), got shape {masks.shape}")
        self.check_frame_size(masks.shape[-2:], "masks")
        top, bottom, left, right = self.crop
        height, width = masks.shape[-2:]
        masks = masks[..., top:height - bottom, left:width - right]
        if self.size is None:
            return np.ascontiguousarray(masks)
        return resize_masks(np.ascontiguousarray(masks), self.size)

    # ----------------------------------------------------------------------------- records
    def describe(self) -> str:
        """A short human-readable summary, e.g. ``observation, crop (34, 16, 0, 0), resize 80x80``."""
        parts = [self.source]
        if any(self.crop):
            parts.append(f"crop {self.crop}")
        if self.size is not None:
            parts.append(f"resize {self.size[0]}x{self.size[1]}")
        if self.env_kwargs:
            parts.append("env " + ", ".join(f"{k}={v!r}" for k, v in self.env_kwargs.items()))
        return ", ".join(parts)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-serialisable dict (lists for the tuples; ``env_kwargs`` only when recorded, so pipelines
        without them read as they always did)."""
        data = {key: (list(value) if isinstance(value, tuple) else value)
                for key, value in dataclasses.asdict(self).items()}
        if data["env_kwargs"] is None:
            del data["env_kwargs"]
        return data

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> FramePipeline:
        """Rebuild a pipeline from :meth:`to_dict` output, rejecting unknown fields with a clear error."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise FramePipelineError(f"unknown frame pipeline fields {unknown}; known fields: {sorted(known)}")
        values = dict(data)
        if "crop" in values:
            values["crop"] = tuple(values["crop"])
        return cls(**values)

    def with_size(self, size: Size | None) -> FramePipeline:
        """The same pipeline resizing to ``size`` instead."""
        return dataclasses.replace(self, size=_pair(size, "size"))


def size_from_flag(values: Sequence[int] | int | None, flag: str = "--resize") -> Size | None:
    """A size given on the command line: nothing → None, ``N`` → N (square), ``H W`` → ``(H, W)``.

    :raises FramePipelineError: for another number of values or non-positive sizes.
    """
    if values is None or isinstance(values, int):
        return values
    values = [int(v) for v in values]
    if not values:
        return None
    if len(values) > 2 or min(values) < 1:
        raise FramePipelineError(f"{flag} takes one size N (N x N) or two, H W; got {' '.join(map(str, values))}")
    return values[0] if len(values) == 1 else (values[0], values[1])


def model_frame_pipeline(model: Any) -> FramePipeline:
    """The pipeline that turns raw frames into input of ``model`` (before its float preprocessing).

    A recorded pipeline (``model.frame_pipeline`` from a checkpoint) is applied whole, so the model sees the
    uint8 frames it was trained on bit for bit. Without one (the default: a plain resize to ``image_size``),
    the frames only become RGB and the model's preprocessing resizes them in float, as it always has.

    :param model: a :class:`psb_rl.PSBAutoencoder`.
    """
    pipeline = getattr(model, "frame_pipeline", None)
    if pipeline is None:
        return FramePipeline()
    if pipeline == FramePipeline(size=size_hw(model.config.image_size)):
        return FramePipeline(env_kwargs=pipeline.env_kwargs)
    return pipeline


def rendering_options(env_kwargs: dict[str, Any] | None) -> dict[str, Any]:
    """The ``gym.make`` arguments of ``env_kwargs`` a frame pipeline records: all but
    :data:`NOT_FRAME_OPTIONS`.

    :param env_kwargs: the arguments an env was made with (e.g. a rollout manifest's ``env_kwargs``).
    :return: a new dict, sorted by name.
    """
    return {key: env_kwargs[key] for key in sorted(env_kwargs or {}) if key not in NOT_FRAME_OPTIONS}


def pipeline_of_manifest(manifest: dict[str, Any]) -> FramePipeline:
    """The frame pipeline a rollout collection applied (``manifest["frame_pipeline"]``), with the env's
    rendering options from the manifest's ``env_kwargs``.

    Collections stored before pipelines were recorded give their source and ``resize``.
    """
    options = rendering_options(manifest.get("env_kwargs")) or None
    if "frame_pipeline" in manifest:
        recorded = FramePipeline.from_dict(manifest["frame_pipeline"])
        return recorded if recorded.env_kwargs else dataclasses.replace(recorded, env_kwargs=options)
    return FramePipeline(source="render" if manifest.get("pixels") == "render" else "observation",
                         size=manifest.get("resize"), env_kwargs=options)


def pipeline_for_model(info: dict[str, Any]) -> FramePipeline:
    """The frame pipeline of a checkpoint, from :func:`psb_rl.checkpoint.read_checkpoint`'s ``info``.

    The recorded pipeline makes the frames the model was trained on (which the model's preprocessing
    then resizes to its ``image_size``, as in training). Checkpoints written without one resize any frame
    to the model's size.

    :param info: the ``info`` dict of ``read_checkpoint`` (``extra`` and ``config``).
    :return: the pipeline.
    """
    recorded = (info.get("extra") or {}).get("frame_pipeline")
    if recorded is None:
        return FramePipeline(size=size_hw(info["config"]["image_size"]))
    return FramePipeline.from_dict(recorded)


__all__ = [
    "FRAME_VALUES",
    "LAYOUTS",
    "FrameDtypeError",
    "FramePipeline",
    "FramePipelineError",
    "check_frame_values",
    "frame_layout",
    "model_frame_pipeline",
    "newest_rgb",
    "pipeline_for_model",
    "pipeline_of_manifest",
    "rendering_options",
    "size_from_flag",
    "size_hw",
]

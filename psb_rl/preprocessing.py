"""The one frame-preprocessing function shared by training, the streaming encoder and the wrappers.

Every path that turns environment frames into model input goes through :func:`preprocess_frames`,
so a model sees frames resized exactly as they were during pretraining.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from psb_rl.frames import FrameDtypeError, FramePipelineError, check_frame_values
from psb_rl.sizes import Size, size_hw

ArrayLike = np.ndarray | torch.Tensor


def _resize(frames: torch.Tensor, size: Size) -> torch.Tensor:
    """Resize float ``(B, C, H, W)`` frames to ``(B, C, *size)`` (bilinear, antialiased)."""
    hw = size_hw(size)
    if tuple(frames.shape[-2:]) == hw:
        return frames
    return F.interpolate(frames, size=hw, mode="bilinear", antialias=True, align_corners=False)


def _first_line(error: BaseException) -> str:
    return next((line.strip() for line in str(error).splitlines() if line.strip()), type(error).__name__)


def preprocess_frames(
    frames: ArrayLike, image_size: Size, device: torch.device | str | None = None
) -> torch.Tensor:
    """Turn frames into model input: float32 ``(..., 3, H, W)`` in ``[0, 1]``, ``(H, W)`` = ``image_size``.

    :param frames: either uint8 channels-last ``(..., H, W, 3)`` (as environments emit them), or
        float channels-first ``(..., 3, H, W)`` already in ``[0, 1]`` (other values, NaN and inf are refused
        with :class:`psb_rl.frames.FramePipelineError`). Any leading batch/time dims.
    :param image_size: the model's input resolution, ``S`` (square) or ``(H, W)``; other sizes are resized.
    :param device: where the result lives (default: where ``frames`` are).
    :return: float32 tensor ``(..., 3, H, W)``.
    """
    try:
        tensor = torch.as_tensor(frames, device=device)
    except (TypeError, ValueError, RuntimeError) as error:
        raise FramePipelineError(f"frames must be an array of uint8 (..., H, W, 3) or float (..., 3, H, W) frames, got "
                                 f"a {type(frames).__name__} that is not one ({_first_line(error)})") from None
    if tensor.dtype == torch.uint8:
        if tensor.ndim < 3 or tensor.shape[-1] != 3:
            raise FramePipelineError(
                f"uint8 frames must be channels-last RGB (..., H, W, 3); got shape {tuple(tensor.shape)}. "
                "Pass uint8 (H, W, 3) images as environments return them, or float (3, H, W) in [0, 1]."
            )
        tensor = tensor.movedim(-1, -3).float().div_(255.0)
    elif tensor.is_floating_point():
        if tensor.ndim < 3 or tensor.shape[-3] != 3:
            raise FramePipelineError(
                f"float frames must be channels-first (..., 3, H, W) in [0, 1]; got shape {tuple(tensor.shape)}. "
                "Convert channels-last images with .permute, or pass them as uint8 (..., H, W, 3)."
            )
        check_frame_values(tensor)  # float frames in 0..255 are refused, never clipped
        tensor = tensor.float()
    else:
        raise FrameDtypeError(
            f"frames must be uint8 (..., H, W, 3) or float (..., 3, H, W); got dtype {tensor.dtype}."
        )
    if 0 in tensor.shape[-2:]:
        raise FramePipelineError(f"frames of shape {tuple(tensor.shape)} have no pixels")
    lead = tensor.shape[:-3]
    flat = tensor.reshape(-1, *tensor.shape[-3:])
    height, width = size_hw(image_size)
    out = _resize(flat, image_size) if flat.shape[0] > 0 else flat.new_zeros(0, 3, height, width)
    return out.reshape(*lead, 3, height, width)


def resize_uint8_frames(frames: np.ndarray, image_size: Size) -> np.ndarray:
    """Resize uint8 ``(..., H, W, 3)`` frames for storage, with the same filter as :func:`preprocess_frames`.

    :param frames: uint8 channels-last frames.
    :param image_size: target size ``S`` or ``(H, W)``.
    :return: uint8 ``(..., H, W, 3)``.
    """
    if tuple(frames.shape[-3:-1]) == size_hw(image_size):
        return frames
    resized = preprocess_frames(frames, image_size)
    return (resized.movedim(-3, -1) * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()

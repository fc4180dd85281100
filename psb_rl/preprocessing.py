"""The one frame-preprocessing function shared by training, the streaming encoder and the wrappers.

Every path that turns environment frames into model input goes through :func:`preprocess_frames`,
so a model sees frames resized exactly as they were during pretraining.
"""

from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

ArrayLike = np.ndarray | torch.Tensor


def _resize(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Resize float ``(B, 3, H, W)`` frames to ``(B, 3, size, size)`` (bilinear, antialiased)."""
    if frames.shape[-2:] == (size, size):
        return frames
    return F.interpolate(frames, size=(size, size), mode="bilinear", antialias=True, align_corners=False)


def preprocess_frames(
    frames: ArrayLike, image_size: int, device: torch.device | str | None = None
) -> torch.Tensor:
    """Turn frames into model input: float32 ``(..., 3, image_size, image_size)`` in ``[0, 1]``.

    :param frames: either uint8 channels-last ``(..., H, W, 3)`` (as environments emit them), or
        float channels-first ``(..., 3, H, W)`` already in ``[0, 1]``. Any leading batch/time dims.
    :param image_size: the model's square input resolution; other sizes are resized.
    :param device: where the result lives (default: where ``frames`` are).
    :return: float32 tensor ``(..., 3, image_size, image_size)``.
    """
    tensor = torch.as_tensor(frames, device=device)
    if tensor.dtype == torch.uint8:
        if tensor.ndim < 3 or tensor.shape[-1] != 3:
            raise ValueError(
                f"uint8 frames must be channels-last RGB (..., H, W, 3); got shape {tuple(tensor.shape)}. "
                "Pass uint8 (H, W, 3) images as environments return them, or float (3, H, W) in [0, 1]."
            )
        tensor = tensor.movedim(-1, -3).float().div_(255.0)
    elif tensor.is_floating_point():
        if tensor.ndim < 3 or tensor.shape[-3] != 3:
            raise ValueError(
                f"float frames must be channels-first (..., 3, H, W) in [0, 1]; got shape {tuple(tensor.shape)}. "
                "Convert channels-last images with .permute, or pass them as uint8 (..., H, W, 3)."
            )
        tensor = tensor.float()
    else:
        raise TypeError(
            f"frames must be uint8 (..., H, W, 3) or float (..., 3, H, W); got dtype {tensor.dtype}."
        )
    lead = tensor.shape[:-3]
    flat = tensor.reshape(-1, *tensor.shape[-3:])
    out = _resize(flat, image_size) if flat.shape[0] > 0 else flat.new_zeros(0, 3, image_size, image_size)
    return out.reshape(*lead, 3, image_size, image_size)


def resize_uint8_frames(frames: np.ndarray, image_size: int) -> np.ndarray:
    """Resize uint8 ``(..., H, W, 3)`` frames for storage, with the same filter as :func:`preprocess_frames`.

    :param frames: uint8 channels-last frames.
    :param image_size: target square size.
    :return: uint8 ``(..., image_size, image_size, 3)``.
    """
    if frames.shape[-3:-1] == (image_size, image_size):
        return frames
    resized = preprocess_frames(frames, image_size)
    return (resized.movedim(-3, -1) * 255.0).round_().clamp_(0, 255).to(torch.uint8).numpy()


def resize_masks(masks: np.ndarray, image_size: int) -> np.ndarray:
    """Resize integer segmentation masks ``(..., H, W)`` by nearest neighbour (labels must not blend).

    :param masks: integer masks, 0 = background.
    :param image_size: target square size.
    :return: masks ``(..., image_size, image_size)`` with the input dtype.
    """
    if masks.shape[-2:] == (image_size, image_size):
        return masks
    tensor = torch.as_tensor(masks.astype(np.int64)).float()
    lead = tensor.shape[:-2]
    flat = tensor.reshape(-1, 1, *tensor.shape[-2:])
    out = F.interpolate(flat, size=(image_size, image_size), mode="nearest-exact")
    return out.reshape(*lead, image_size, image_size).long().numpy().astype(masks.dtype)

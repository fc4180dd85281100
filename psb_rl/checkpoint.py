"""Safe model checkpoints: safetensors weights + JSON metadata (config, preprocessing, format version).

Loading never unpickles anything: the file is parsed by safetensors (a JSON header and raw tensor
bytes), and a sha256 of the weights stored in the header detects corrupted files.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from psb_rl.config import PSBConfig
from psb_rl.frames import FramePipeline
from psb_rl.utils import atomic_path, resolve_device

FORMAT_NAME = "psb-rl-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(ValueError):
    """A checkpoint file is missing, of another format, corrupted or from a newer version."""


def _weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(name.encode())
        digest.update(str(tensor.dtype).encode())
        digest.update(str(tuple(tensor.shape)).encode())
        digest.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return digest.hexdigest()


def save_checkpoint(model: torch.nn.Module, path: str | os.PathLike, extra: dict[str, Any] | None = None) -> Path:
    """Write ``model``'s weights, config and preprocessing to ``path`` atomically.

    :param model: a :class:`psb_rl.PSBAutoencoder` (anything with ``.config: PSBConfig``).
    :param path: destination file (conventionally ``*.ckpt``).
    :param extra: optional JSON-serialisable information stored alongside (e.g. training step). The
        model's frame pipeline (``model.frame_pipeline``, with the env's rendering options), unless it is the
        default resize to ``image_size`` with none, is stored as ``extra["frame_pipeline"]`` unless ``extra`` gives one.
    :return: the path written.
    """
    config: PSBConfig = model.config
    pipeline = getattr(model, "frame_pipeline", None)
    # the default needs no record (equality ignores env_kwargs, which are recorded whenever there are some)
    if pipeline is not None and (pipeline != FramePipeline(size=config.image_hw) or pipeline.env_kwargs):
        extra = {"frame_pipeline": pipeline.to_dict(), **(extra or {})}
    tensors = {name: value.detach().cpu().contiguous() for name, value in model.state_dict().items()}
    metadata = {
        "format": FORMAT_NAME,
        "format_version": str(FORMAT_VERSION),
        "config": json.dumps(config.to_dict()),
        "preprocessing": json.dumps(
            {"image_size": config.image_size, "value_range": [0.0, 1.0], "channels": "RGB", "resize": "bilinear-antialias"}
        ),
        "weights_sha256": _weights_digest(tensors),
        "extra": json.dumps(extra or {}),
    }
    with atomic_path(path) as tmp:
        save_file(tensors, str(tmp), metadata=metadata)
    return Path(path)


def read_checkpoint(path: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Read and verify a checkpoint without building a model.

    :return: ``(state_dict, info)`` where info has ``config`` (dict), ``preprocessing``, ``extra``,
        ``format_version``.
    :raises CheckpointError: missing, foreign, corrupted, truncated or newer-version files.
    """
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path}. Train one with `python pretrain/train_psb.py`.")
    try:
        with safe_open(str(path), framework="pt", device="cpu") as handle:
            metadata = handle.metadata() or {}
            if metadata.get("format") != FORMAT_NAME:
                raise CheckpointError(
                    f"{path} is a safetensors file but not a psb-rl checkpoint (format="
                    f"{metadata.get('format')!r}); save models with psb_rl.save_checkpoint."
                )
            tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    except CheckpointError:
        raise
    except (SafetensorError, OSError, ValueError, RuntimeError) as error:
        raise CheckpointError(
            f"{path} is not a readable psb-rl checkpoint (expected a safetensors file written by "
            f"psb_rl.save_checkpoint; it may be truncated, corrupted, or another format such as a "
            f"pickled torch file, which is never loaded for safety): {error}"
        ) from error
    try:
        version = int(metadata.get("format_version", "0"))
    except ValueError:
        raise CheckpointError(f"{path} is damaged: its format version {metadata.get('format_version')!r} is not "
                              "a number.") from None
    if version > FORMAT_VERSION:
        raise CheckpointError(
            f"{path} has checkpoint format version {version}, newer than this psb-rl supports "
            f"({FORMAT_VERSION}); upgrade psb-rl to load it."
        )
    if _weights_digest(tensors) != metadata.get("weights_sha256"):
        raise CheckpointError(f"{path} is corrupted: its weights do not match the checksum stored in its header.")
    info: dict[str, Any] = {"format_version": version}
    for key, default in (("config", None), ("preprocessing", "{}"), ("extra", "{}")):
        try:
            info[key] = json.loads(metadata[key] if default is None else metadata.get(key, default))
        except (KeyError, ValueError):
            info[key] = None
        if not isinstance(info[key], dict):
            raise CheckpointError(f"{path} is damaged: its {key!r} record is missing or not a JSON object; the file "
                                  "was modified or was not written by psb_rl.save_checkpoint.")
    return tensors, info


def load_checkpoint(path: str | os.PathLike, device: str | torch.device = "cpu") -> torch.nn.Module:
    """Rebuild a :class:`psb_rl.PSBAutoencoder` from a checkpoint, in eval mode, with its frame pipeline
    (``model.frame_pipeline``; checkpoints written without one resize frames to ``image_size``).

    :param path: file written by :func:`save_checkpoint`.
    :param device: ``"cpu"``, ``"cuda"`` or ``"auto"``.
    :raises CheckpointError: see :func:`read_checkpoint`.
    """
    from psb_rl.model import PSBAutoencoder

    tensors, info = read_checkpoint(path)
    # Checkpoints written before the colour_values field existed were built without that path.
    config = {"colour_values": False, **info["config"]}
    try:
        model = PSBAutoencoder(PSBConfig.from_dict(config))
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except (RuntimeError, ValueError, TypeError, ArithmeticError, AttributeError, KeyError) as error:
        raise CheckpointError(
            f"{path}: its stored config does not describe its weights ({_first_line(error)}); the file was "
            "modified or written by an incompatible psb-rl version."
        ) from None
    if missing or unexpected:
        raise CheckpointError(
            f"{path} does not match the model its config describes (missing {missing[:5]}, unexpected "
            f"{unexpected[:5]}); it was probably written by an incompatible psb-rl version."
        )
    expected = model.state_dict()
    retyped = [name for name, tensor in tensors.items() if tensor.dtype != expected[name].dtype]
    if retyped:  # load_state_dict would cast them silently
        raise CheckpointError(f"{path}: tensors {retyped[:3]} are {tensors[retyped[0]].dtype}, the model's "
                              f"{expected[retyped[0]].dtype}; the file was modified or written by another program.")
    from psb_rl.frames import FramePipelineError, pipeline_for_model

    try:
        model.frame_pipeline = pipeline_for_model(info)  # how raw frames become the frames it was trained on
    except (FramePipelineError, TypeError, ValueError, AttributeError) as error:
        raise CheckpointError(f"{path}: its recorded frame pipeline is damaged ({_first_line(error)}); the file "
                              "was modified or written by an incompatible psb-rl version.") from None
    return model.to(resolve_device(device)).eval()


def _first_line(error: BaseException) -> str:
    """The first non-empty line of an error message (PyTorch's size-mismatch reports span many)."""
    lines = [line.strip() for line in str(error).splitlines() if line.strip()]
    detail = next((line for line in lines if "size mismatch" in line), lines[0] if lines else type(error).__name__)
    return detail.rstrip(".")


def file_sha256(path: str | os.PathLike) -> str:
    """Hex SHA-256 of a file's bytes (the identity a PPO run records for its PSB checkpoint)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def verify_checkpoint_identity(path: str | os.PathLike, expected_sha256: str | None,
                               recorded_path: str | None = None, owner: str = "this run") -> None:
    """Check that ``path`` is the very checkpoint ``owner`` was trained with.

    :param path: the checkpoint about to be used.
    :param expected_sha256: the SHA-256 the run recorded (None: nothing recorded, nothing checked).
    :param recorded_path: the path the run recorded, for the message.
    :param owner: who recorded it, for the message (e.g. ``"the agent in runs/ppo"``).
    :raises CheckpointError: naming both files and digests when they differ.
    """
    if not expected_sha256:
        return
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint not found: {path} ({owner} was trained with {recorded_path or path}).")
    actual = file_sha256(path)
    if actual != expected_sha256:
        raise CheckpointError(
            f"{path} (sha256 {actual[:12]}...) is not the PSB checkpoint {owner} was trained with "
            f"({recorded_path or 'recorded'}, sha256 {expected_sha256[:12]}...); pass that checkpoint, or retrain "
            "the agent on this one."
        )

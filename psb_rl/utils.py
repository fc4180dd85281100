"""Small shared helpers: device resolution and atomic file writes."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported on use, so atomic_path stays light (psb_rl.rollouts imports no torch)
    import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Map ``"auto"``/None to CUDA when available, else CPU; validate explicit requests.

    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device`` or None.
    """
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    resolved = torch.device(device)
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu or auto")
    return resolved


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, *, suffix: str | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; on success it is fsynced and renamed over ``path``.

    On any error the temporary file is removed and the previous ``path`` (if any) is left untouched,
    so readers only ever see complete files (also when the disk fills up mid-write). The file gets the
    permissions a plain ``open(path, "w")`` would give (``0o666`` minus the umask).

    :param path: the destination file (parent folders are created).
    :param suffix: ending of the temporary name (default ``".tmp"``); pass e.g. ``target.suffix`` when
        the writer picks its format from the file extension (imageio).
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp" if suffix is None else suffix,
                                    dir=target.parent)
    os.close(fd)
    tmp = Path(tmp_name)
    try:
        yield tmp
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o666 & ~_umask())
        os.replace(tmp, target)
    finally:
        if tmp.exists():
            tmp.unlink()


def _umask() -> int:
    """The process umask (read by setting and restoring it)."""
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def write_json(path: str | os.PathLike, data: Any) -> Path:
    """Write ``data`` as indented JSON to ``path`` atomically (see :func:`atomic_path`).

    :return: the path written.
    """
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(data, indent=2))
    return Path(path)


def child_pythonpath(*roots: str | os.PathLike) -> str:
    """``PYTHONPATH`` for a child process: ``roots`` first, then this process's ``PYTHONPATH`` (kept, so
    packages found through it, e.g. a wheel folder, stay importable in the child).

    :param roots: folders to put first, e.g. the repository root.
    :return: the joined path list.
    """
    return os.pathsep.join([*(str(r) for r in roots), *filter(None, [os.environ.get("PYTHONPATH")])])

"""Small shared helpers: device resolution and atomic file writes."""

from __future__ import annotations

import contextlib
import json
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # torch is imported on use, so atomic_path stays light (psb_rl.rollouts and psb_rl.shards import no torch)
    import torch


def resolve_device(device: str | torch.device | None = "auto") -> torch.device:
    """Map ``"auto"``/None to CUDA when available, else CPU; validate explicit requests.

    :param device: ``"auto"``, ``"cpu"``, ``"cuda"``, ``"cuda:1"``, a ``torch.device`` or None.
    :raises ValueError: for a name that is no device, or CUDA where there is none.
    """
    import torch

    if device is None or str(device) == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError):
        raise ValueError(f"device {str(device)!r} is not a torch device; use auto, cpu, cuda or cuda:N") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():  # a user mistake on this machine: one line
        raise ValueError(f"device {str(device)!r} requested but CUDA is not available; use --device cpu or auto")
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


# ------------------------------------------------------------------------------ run directories
LOCK_NAME = ".lock"


class RunDirError(ValueError):
    """An output directory cannot be used: it is in use by another process, holds a run that would be
    replaced, or cannot be written."""


def _pid_alive(pid: int) -> bool:
    """Whether a process with this id exists on this host."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, owned by someone else
        return True
    return True


def read_lock(directory: str | os.PathLike) -> dict[str, Any] | None:
    """The holder recorded in ``<directory>/.lock`` (``pid``, ``host``, ``started``), or None without a lock."""
    path = Path(directory) / LOCK_NAME
    try:
        holder = json.loads(path.read_text())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):
        return {"pid": -1, "host": "?", "started": None}  # unreadable: treated as held by an unknown process
    return holder if isinstance(holder, dict) else {"pid": -1, "host": "?", "started": None}


@contextlib.contextmanager
def run_lock(directory: str | os.PathLike, flag: str = "--out") -> Iterator[Path]:
    """Own ``directory`` while a run writes to it: create ``<directory>/.lock`` (pid and host) or fail.

    A lock left by a process that no longer exists on this host is taken over; a lock held by a live
    process (or by one on another host, which cannot be checked) raises :class:`RunDirError` naming it.
    The lock file is removed on exit, also when the run fails.

    :param directory: the run directory (created).
    :param flag: the option that named the directory, for the error message.
    :return: the lock file's path.
    """
    import socket
    import time

    root = Path(directory)
    root.mkdir(parents=True, exist_ok=True)
    path = root / LOCK_NAME
    host = socket.gethostname()
    record = json.dumps({"pid": os.getpid(), "host": host, "started": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    for _ in range(2):
        try:
            fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o644)
        except FileExistsError:
            holder = read_lock(root) or {}
            pid, holder_host = int(holder.get("pid", -1)), str(holder.get("host", "?"))
            if holder_host == host and pid > 0 and not _pid_alive(pid):
                path.unlink(missing_ok=True)  # stale: its process is gone
                continue
            raise RunDirError(
                f"{root} is in use by another run (pid {pid} on host {holder_host}, lock file {path}); wait for "
                f"it to finish or choose another {flag}. If that process is gone, delete {path}."
            ) from None
        with os.fdopen(fd, "w") as handle:
            handle.write(record)
        break
    else:  # pragma: no cover - another process took the stale lock between our two attempts
        raise RunDirError(f"{root} was locked by another run while this one started; choose another {flag}")
    try:
        yield path
    finally:
        if (read_lock(root) or {}).get("pid") == os.getpid():
            path.unlink(missing_ok=True)


def ensure_writable_dir(directory: str | os.PathLike, flag: str = "--out") -> Path:
    """Create ``directory`` if needed and check that files can be written in it, before any work starts.

    :param directory: the output directory.
    :param flag: the option that named it, for the error message.
    :return: the directory.
    :raises RunDirError: when a file is in the way or the directory cannot be created or written.
    """
    root = Path(directory)
    if root.exists() and not root.is_dir():
        raise RunDirError(f"{flag} {root} is an existing file, not a directory; choose another {flag}")
    try:
        root.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=root):
            pass
    except OSError as err:
        raise RunDirError(f"cannot write to {flag} {root} ({err.strerror or err}); choose a writable {flag}") from None
    return root


def ensure_writable_file(path: str | os.PathLike, flag: str = "--out") -> Path:
    """Check, before any work starts, that ``path`` can be written (a file, in a writable directory).

    :param path: the output file.
    :param flag: the option that named it, for the error message.
    :return: the path.
    :raises RunDirError: when ``path`` is a directory or its directory cannot be written.
    """
    target = Path(path)
    if target.is_dir():
        raise RunDirError(f"{flag} {target} is a directory; give a file path")
    ensure_writable_dir(target.parent, flag)
    return target


def claim_run_dir(directory: str | os.PathLike, run_files: tuple[str, ...], resume: bool, overwrite: bool,
                  resume_flag: str = "--resume") -> list[str]:
    """Refuse to start a new run over an earlier one unless asked to continue or to replace it.

    :param directory: the run directory.
    :param run_files: names (files or folders) whose presence means a run was (partly) written there.
    :param resume: the run continues the one in the directory.
    :param overwrite: the earlier run is replaced: its ``run_files`` are deleted.
    :param resume_flag: the option that continues a run, for the error message.
    :return: the names of ``run_files`` found.
    :raises RunDirError: when an earlier run is there and neither ``resume`` nor ``overwrite`` is set.
    """
    import shutil

    root = Path(directory)
    found = [name for name in run_files if (root / name).exists()]
    if found and not resume and not overwrite:
        raise RunDirError(
            f"{root} already holds a run ({', '.join(found)}); pass {resume_flag} to continue it, --overwrite to "
            "replace it, or choose another --out"
        )
    if found and overwrite and not resume:
        for name in found:
            target = root / name
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            else:
                target.unlink(missing_ok=True)
    return found


def _is_empty_dir(path: Path) -> bool:
    return path.is_dir() and not path.is_symlink() and not any(path.iterdir())


@contextlib.contextmanager
def owned_run_dir(directory: str | os.PathLike, run_files: tuple[str, ...], resume: bool = False,
                  overwrite: bool = False, flag: str = "--out", resume_flag: str = "--resume",
                  start_files: tuple[str, ...] = ()) -> Iterator[Path]:
    """Own a run directory for the length of a run: check it can be written (:func:`ensure_writable_dir`), lock
    it (:func:`run_lock`) and refuse an earlier run in it (:func:`claim_run_dir`).

    A run that fails before writing any of ``run_files`` leaves the directory as it found it: the
    ``start_files`` it wrote first (e.g. ``args.json``) and empty ``run_files`` folders it created are removed,
    and so is the directory when the run created it and nothing else is in it. Nothing that was there before
    is touched, and a run that wrote a run file keeps everything it wrote.

    :param directory: the run directory (created).
    :param run_files: names whose presence means a run was (partly) written there.
    :param resume: the run continues the one in the directory.
    :param overwrite: the earlier run is replaced.
    :param flag: the option that named the directory, for messages.
    :param resume_flag: the option that continues a run, for messages.
    :param start_files: names a run writes before its work starts (removed if it fails before any run file).
    :return: the directory.
    """
    root = Path(directory)
    created = not root.exists()
    ensure_writable_dir(root, flag)
    before: set[str] | None = None
    try:
        with run_lock(root, flag):
            claim_run_dir(root, run_files, resume=resume, overwrite=overwrite, resume_flag=resume_flag)
            before = {p.name for p in root.iterdir()}
            yield root
    except BaseException:
        _discard_failed_run_start(root, created, before, run_files, start_files)
        raise


def _discard_failed_run_start(root: Path, created: bool, before: set[str] | None, run_files: tuple[str, ...],
                              start_files: tuple[str, ...]) -> None:
    """What :func:`owned_run_dir` removes after a run failed before writing its outputs."""
    if not root.is_dir():
        return
    new = {p.name for p in root.iterdir()} - (before or set()) - {LOCK_NAME}
    if any(name in run_files and not _is_empty_dir(root / name) for name in new):
        return  # the run got as far as its outputs: keep everything it wrote
    for name in new:
        path = root / name
        if name in start_files and path.is_file():
            path.unlink(missing_ok=True)
        elif name in run_files and _is_empty_dir(path):
            path.rmdir()
    if created and not any(root.iterdir()):  # the lock is released by now
        with contextlib.suppress(OSError):
            root.rmdir()


def repository_commit(path: str | os.PathLike) -> str:
    """The git commit of the checkout that holds ``path`` (short hash, ``+dirty`` when tracked files differ from
    it), for the provenance of a benchmark's results; ``"unknown"`` outside a git checkout."""
    import subprocess

    def git(*arguments: str) -> str:
        return subprocess.run(["git", *arguments], cwd=path, capture_output=True, text=True, check=True).stdout.strip()

    try:
        dirty = git("status", "--porcelain", "--untracked-files=no")
        return git("rev-parse", "--short", "HEAD") + ("+dirty" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


def set_torch_threads(threads: int | None) -> None:
    """Apply a ``--torch-threads`` option: ``torch.set_num_threads(threads)``; None keeps torch's default
    (one thread per core, which is slower when environments or other runs share those cores).

    :param threads: CPU threads for torch ops, >= 1, or None.
    """
    if threads is None:
        return
    if threads < 1:
        raise ValueError(f"--torch-threads must be >= 1, got {threads}")
    import torch

    torch.set_num_threads(threads)

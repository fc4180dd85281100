"""Collect environment videos into checksummed shards plus a manifest (the data format of §4).

Layout of a rollout directory::

    <dir>/manifest.json        # written atomically after every shard
    <dir>/shard-00000.npz      # written as .shard-00000.npz.<random>.tmp, then os.replace'd
    <dir>/shard-00001.npz
    ...

Shard format (``FORMAT_VERSION = 1``), *ragged*: episodes are concatenated along the first axis.
With ``E`` episodes, episode ``e`` having ``T_e = steps_e + 1`` frames (the reset observation plus
one per step), ``F = sum(T_e)`` and ``S = sum(steps_e)``:

============================  =====================================================
``frames``                    uint8 ``(F, H, W, 3)``
``masks`` (if the env has)    uint8 or int32 ``(F, H, W)``, 0 = background
``mask_categories`` (idem)    int16 ``(F, L)`` category index of each mask label (``-1``:
                              none); the names are the manifest's ``mask_categories``
``episode_lengths``           int64 ``(E,)`` frames per episode ``T_e``
``episode_indices``           int64 ``(E,)`` global episode index ``i`` (reset seed
                              ``episode_seed(seed, i)``)
``actions``                   ``(S, *action_shape)`` the action taken after frame t
``rewards``                   float32 ``(S,)``
``terminated`` / ``truncated``  bool ``(S,)``
============================  =====================================================

Episode ``e``'s frames are ``frames[o_e : o_e + T_e]`` with ``o_e = sum(T_0..T_{e-1})``; its
steps are ``actions[o_e - e : o_e - e + T_e - 1]``. :func:`load_shard_episodes` does this split.

Episode ``i`` is always reset with seed :func:`episode_seed(seed, i) <episode_seed>` and (for the
random policy) samples actions from an action space seeded from ``(seed, i)``, so the collected episodes do not depend on the
number of envs nor on interruptions: ``resume=True`` finishes exactly the requested amount.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import hashlib
import itertools
import json
import re
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from psb_rl.frames import FramePipeline, FramePipelineError, Size, newest_rgb
from psb_rl.utils import atomic_path, ensure_writable_dir, run_lock

FORMAT_VERSION: int = 1
MANIFEST_NAME: str = "manifest.json"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npz$")

Policy = Callable[[np.ndarray], np.ndarray]


class RolloutError(ValueError):
    """A rollout directory is missing, inconsistent with the request, or corrupted."""


class ShardChecksumError(RolloutError):
    """A shard's sha256 does not match the manifest (the file is corrupted or was modified)."""


# --------------------------------------------------------------------------- helpers
def episode_seed(seed: int, index: int) -> int:
    """Reset seed of episode ``index`` of a collection with seed ``seed``.

    Derived with :class:`numpy.random.SeedSequence`, so collections with different seeds share no
    episode (unlike ``seed + index``, which would make seed 0 and seed 1 overlap almost entirely).

    :param seed: the collection seed.
    :param index: the global episode index.
    :return: a 32-bit reset seed.
    """
    return int(np.random.SeedSequence([int(seed), int(index)]).generate_state(1)[0])


def shard_name(index: int) -> str:
    """File name of shard ``index``: ``shard-00000.npz``."""
    return f"shard-{index:05d}.npz"


def sha256_file(path: str | Path, chunk: int = 1 << 20) -> str:
    """Hex sha256 of a file, read in chunks.

    :param path: file path.
    :param chunk: bytes per read.
    :return: the hex digest.
    """
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def write_manifest(root: str | Path, manifest: dict[str, Any]) -> None:
    """Write ``manifest.json`` atomically (temporary file + ``os.replace``).

    :param root: rollout directory.
    :param manifest: the manifest dict (JSON-serialisable).
    """
    with atomic_path(Path(root) / MANIFEST_NAME) as tmp:
        tmp.write_bytes(json.dumps(manifest, indent=1).encode())


def no_rollouts_message(root: str | Path) -> str:
    """The error text for a directory without rollouts."""
    return f"no rollouts found at {root}: run python pretrain/collect_rollouts.py --out {root} first"


def load_manifest(root: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``<root>/manifest.json``.

    :param root: rollout directory.
    :return: the manifest dict.
    :raises RolloutError: when the directory or manifest is missing, or of another format.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        raise RolloutError(no_rollouts_message(root))
    try:
        manifest = json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise RolloutError(f"{path} is not valid JSON ({e}); the rollout directory is corrupted") from e
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise RolloutError(f"{path} has format_version {version!r}; this psb_rl reads version {FORMAT_VERSION}")
    return manifest


def manifest_record(root: str | Path) -> dict[str, Any]:
    """The identity of a collection, as a checkpoint records it: ``manifest_sha256``, ``env_id``, ``path``.

    :param root: rollout directory.
    :raises RolloutError: when it holds no rollouts.
    """
    manifest = load_manifest(root)
    return {"manifest_sha256": sha256_file(Path(root) / MANIFEST_NAME), "env_id": manifest.get("env_id"),
            "path": str(root)}


def verify_shard(root: str | Path, entry: dict[str, Any]) -> None:
    """Check one shard's existence and sha256 against its manifest entry.

    :param root: rollout directory.
    :param entry: the shard's entry in ``manifest["shards"]``.
    :raises ShardChecksumError: naming the shard when it is missing or its checksum differs.
    """
    path = Path(root) / entry["file"]
    if not path.is_file():
        raise ShardChecksumError(f"shard {path} listed in the manifest is missing; {repair_hint(root)}")
    digest = sha256_file(path)
    if digest != entry["sha256"]:
        raise ShardChecksumError(
            f"shard {path} is corrupted: sha256 {digest} does not match the manifest's {entry['sha256']}; "
            f"{repair_hint(root)}"
        )


def verify_rollouts(root: str | Path) -> dict[str, Any]:
    """Verify every shard's checksum and the manifest's counts.

    :param root: rollout directory.
    :return: the manifest.
    :raises RolloutError: on any inconsistency (naming the shard).
    """
    manifest = load_manifest(root)
    episodes = frames = 0
    for entry in manifest["shards"]:
        verify_shard(root, entry)
        lengths = entry["episode_lengths"]
        if len(lengths) != entry["num_episodes"] or len(entry["episode_indices"]) != len(lengths):
            raise RolloutError(f"manifest entry of {entry['file']} has inconsistent episode counts")
        episodes += len(lengths)
        frames += sum(lengths)
    if episodes != manifest["num_episodes"] or frames != manifest["num_frames"]:
        raise RolloutError(f"manifest at {root} has inconsistent totals (episodes/frames)")
    if frames - episodes != manifest["num_steps"]:
        raise RolloutError(f"manifest at {root} has inconsistent num_steps")
    return manifest


def load_shard(path: str | Path) -> dict[str, np.ndarray]:
    """Load every array of a shard into memory (never unpickles).

    :param path: shard file.
    :return: ``{name: array}`` (see the module docstring for shapes).
    """
    with np.load(path, allow_pickle=False) as z:
        return {k: z[k] for k in z.files}


def load_shard_episodes(path: str | Path) -> list[dict[str, np.ndarray]]:
    """Split a shard into per-episode dicts: ``frames (T,H,W,3)``, ``masks (T,H,W)``, ``actions (T-1,...)``…

    :param path: shard file.
    :return: one dict per episode, with ``episode_index`` as a 0-d array.
    """
    data = load_shard(path)
    out = []
    f0 = s0 = 0
    for e, t in enumerate(data["episode_lengths"].tolist()):
        ep = {"frames": data["frames"][f0:f0 + t], "episode_index": data["episode_indices"][e]}
        for key in ("masks", "mask_categories"):
            if key in data:
                ep[key] = data[key][f0:f0 + t]
        for key in ("actions", "rewards", "terminated", "truncated"):
            ep[key] = data[key][s0:s0 + t - 1]
        out.append(ep)
        f0, s0 = f0 + t, s0 + t - 1
    return out


# ------------------------------------------------------------------------ environments
# Environment creation lives in psb_rl.environments (any gymnasium id, registered on demand).
from psb_rl.environments import ensure_registered, make_env  # noqa: E402


def _is_image(x: Any) -> bool:
    return isinstance(x, np.ndarray) and x.dtype == np.uint8 and x.ndim == 3 and x.shape[-1] == 3


def _probe(env_id: str, env_kwargs: dict[str, Any], max_episode_steps: int | None, pixels: str,
           seed: int, pipeline: FramePipeline | None = None, gym_packages: Sequence[str] = (),
           ground_truth: bool = False) -> tuple[tuple[int, ...], bool, str, FramePipeline, list[str]]:
    """Check that the env yields frames the pipeline reads.

    :return: ``(stored frame_shape, has_masks, layout of the frames, pipeline with its input_size, mask
        category names)``.
    """
    from psb_rl.ground_truth import mask_category_names, with_ground_truth

    pipeline = pipeline or FramePipeline(source="render" if pixels == "render" else "observation")
    env = make_env(env_id, env_kwargs, max_episode_steps, render=pixels == "render", gym_packages=gym_packages)
    if ground_truth:  # masks wherever they can be had (MiniGrid, Atari with OCAtari)
        env = with_ground_truth(env)
    try:
        if pixels == "obs":
            try:
                layout = pipeline.check_space(env.observation_space, f"{env_id} observations")
            except FramePipelineError as error:
                raise RolloutError(f"{error} (--pixels render records env.render() frames)") from None
        obs, info = env.reset(seed=seed)
        frame = env.render() if pixels == "render" else obs
        if pixels == "render":
            if not _is_image(frame):
                raise RolloutError(f"{env_id}: env.render() is not a uint8 (H, W, 3) image "
                                   f"(got {type(frame).__name__} {getattr(frame, 'shape', '')})")
            layout = "hwc"
        rgb = newest_rgb(np.asarray(frame), layout)
        if pipeline.input_size is None:
            pipeline = dataclasses.replace(pipeline, input_size=tuple(rgb.shape[:2]))
        try:
            out_hw = pipeline.output_size(tuple(rgb.shape[:2]))
            pipeline.check_frame_size(rgb.shape[:2], f"{env_id} frames")
        except FramePipelineError as error:
            raise RolloutError(str(error)) from None
        names = list(mask_category_names(env)) if "mask_categories" in info else []
        return (*out_hw, 3), "masks" in info, layout, pipeline, names
    finally:
        env.close()


def load_policy(policy: str | Policy, deterministic: bool = False, observation_space: gym.Space | None = None,
                action_space: gym.Space | None = None) -> Policy | None:
    """Turn the ``policy`` argument into a batched callable (``None`` = uniform random).

    An agent's ``.zip`` is loaded without unpickling (:func:`psb_rl.agent_io.load_agent_policy`): only
    agents of ``agents/train_ppo.py`` (slots, pixels or state; the run's ``args.json`` beside the zip)
    are accepted. The callable may have a ``reset(mask)`` method, called when envs start new episodes.

    :param policy: ``"random"``, a path to an agent's ``model.zip``, or a callable ``obs_batch -> actions``.
    :param deterministic: use the agent's deterministic action.
    :param observation_space: one env's observation space (needed for a ``.zip``).
    :param action_space: one env's action space (needed for a ``.zip``).
    :return: a callable mapping observations ``(num_envs, ...)`` to actions, or ``None``.
    """
    if callable(policy):
        return policy
    if policy == "random":
        return None
    path = Path(policy)
    if not path.is_file():
        raise FileNotFoundError(f"policy must be 'random' or a path to an agent's model.zip; {policy} does not exist")
    if observation_space is None or action_space is None:
        raise ValueError("loading an agent's .zip needs the env's observation_space and action_space")
    from psb_rl.agent_io import load_agent_policy

    return load_agent_policy(path, observation_space, action_space, deterministic)


# ------------------------------------------------------------------------- collection
class _Episode:
    """Per-env buffers of the episode in progress."""

    def __init__(self, index: int) -> None:
        self.index = index
        self.frames: list[np.ndarray] = []
        self.masks: list[np.ndarray] = []
        self.mask_categories: list[np.ndarray] = []
        self.actions: list[np.ndarray] = []
        self.rewards: list[float] = []
        self.terminated: list[bool] = []
        self.truncated: list[bool] = []


def _config(env_id: str, env_kwargs: dict[str, Any], pixels: str, resize: Size | None, seed: int,
            max_episode_steps: int | None, policy: str | Policy, crop: Sequence[int] = (0, 0, 0, 0),
            gym_packages: Sequence[str] = ()) -> dict[str, Any]:
    # crop and gym_packages appear only when used, so collections stored before they existed still resume
    optional = {"crop": [int(v) for v in crop]} if any(crop) else {}
    if gym_packages:
        optional["gym_packages"] = list(gym_packages)
    return {
        "env_id": env_id,
        "env_kwargs": env_kwargs,
        "pixels": pixels,
        "resize": resize if resize is None or isinstance(resize, int) else [int(v) for v in resize],
        **optional,
        "seed": seed,
        "max_episode_steps": max_episode_steps,
        "policy": policy if isinstance(policy, str) else getattr(policy, "__name__", "callable"),
    }


def _new_manifest(config: dict[str, Any], frame_shape: tuple[int, ...], has_masks: bool,
                  episodes_per_shard: int, mask_categories: list[str] | None = None) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        **config,
        "frame_shape": list(frame_shape),
        "has_masks": has_masks,
        "mask_categories": list(mask_categories or []),
        "episodes_per_shard": episodes_per_shard,
        "layout": "ragged: frames (sum T_e, H, W, 3) + episode_lengths (E,)",
        "num_shards": 0,
        "num_episodes": 0,
        "num_steps": 0,
        "num_frames": 0,
        "complete": False,
        "shards": [],
    }


@contextlib.contextmanager
def _single_torch_thread() -> Iterator[None]:
    """Run small torch ops (frame resizing) on one thread: faster than contending with env workers."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _save_npz(handle: Any, arrays: dict[str, np.ndarray], compress: bool) -> None:
    """``np.savez`` (``np.savez_compressed``) with fixed member timestamps: the same episodes always give the
    same bytes, so a repaired shard has the checksum of the one it replaces (and the manifest its digest)."""
    import zipfile

    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(handle, "w", compression=method, allowZip64=True) as archive:
        for name, array in arrays.items():
            info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
            info.compress_type = method
            with archive.open(info, "w", force_zip64=True) as member:
                np.lib.format.write_array(member, np.asanyarray(array), allow_pickle=False)


def _write_shard(root: Path, manifest: dict[str, Any], episodes: list[_Episode], pipeline: FramePipeline,
                 compress: bool) -> None:
    """Write one shard atomically, then the updated manifest atomically.

    Frames and every stored mask go through the collection's frame pipeline (masks by nearest neighbour).
    """
    layout = manifest.get("frame_layout", "hwc")
    with _single_torch_thread():
        frames = [pipeline.apply(np.stack(ep.frames), layout) for ep in episodes]
    arrays: dict[str, np.ndarray] = {
        "frames": np.concatenate(frames),
        "episode_lengths": np.array([len(ep.frames) for ep in episodes], dtype=np.int64),
        "episode_indices": np.array([ep.index for ep in episodes], dtype=np.int64),
        "actions": np.concatenate([np.asarray(ep.actions) for ep in episodes]),
        "rewards": np.concatenate([np.asarray(ep.rewards, dtype=np.float32) for ep in episodes]),
        "terminated": np.concatenate([np.asarray(ep.terminated, dtype=bool) for ep in episodes]),
        "truncated": np.concatenate([np.asarray(ep.truncated, dtype=bool) for ep in episodes]),
    }
    if manifest["has_masks"]:
        with _single_torch_thread():
            masks = [pipeline.apply_masks(np.stack(ep.masks)) for ep in episodes]
        m = np.concatenate(masks)
        arrays["masks"] = m.astype(np.uint8 if m.min() >= 0 and m.max() < 256 else np.int32)
        if manifest.get("mask_categories"):
            arrays["mask_categories"] = np.concatenate([np.stack(ep.mask_categories) for ep in episodes]).astype(np.int16)
    name = shard_name(_free_shard_index(manifest))
    with atomic_path(root / name) as tmp:  # .shard-00000.npz.<random>.tmp until complete
        with open(tmp, "wb") as f:
            _save_npz(f, arrays, compress)
        digest = sha256_file(tmp)
    lengths = arrays["episode_lengths"].tolist()
    manifest["shards"].append({
        "file": name,
        "sha256": digest,
        "num_episodes": len(lengths),
        "episode_lengths": lengths,
        "episode_indices": arrays["episode_indices"].tolist(),
        "num_frames": int(sum(lengths)),
    })
    manifest["shards"].sort(key=lambda entry: entry["file"])  # a repaired shard goes back to its place
    manifest["num_shards"] = len(manifest["shards"])
    manifest["num_episodes"] += len(lengths)
    manifest["num_frames"] += int(sum(lengths))
    manifest["num_steps"] += int(sum(lengths)) - len(lengths)
    if manifest["frame_shape"] != list(arrays["frames"].shape[1:]):
        manifest["frame_shape"] = list(arrays["frames"].shape[1:])
    write_manifest(root, manifest)


def _open_or_create(root: Path, resume: bool, config: dict[str, Any], make_new: Callable[[], dict[str, Any]],
                    repair: bool = False) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    if (root / MANIFEST_NAME).is_file() and _is_empty_start(root):
        (root / MANIFEST_NAME).unlink()  # left by a collection that failed before its first shard
    resume = resume or repair
    if (root / MANIFEST_NAME).is_file():
        if not resume:
            raise RolloutError(f"{root} already holds rollouts (manifest.json); pass --resume (resume=True) "
                               "to continue that collection, or choose another --out directory")
        manifest = load_manifest(root)
        mismatched = {k: (manifest.get(k), v) for k, v in config.items() if manifest.get(k) != v}
        if mismatched:
            details = ", ".join(f"{k}: stored {a!r} vs requested {b!r}" for k, (a, b) in mismatched.items())
            raise RolloutError(f"cannot resume {root}: settings differ from the stored collection ({details})")
        if repair:
            _drop_damaged_shards(root, manifest)
        for entry in manifest["shards"]:
            verify_shard(root, entry)
    else:
        manifest = make_new()
    listed = {e["file"] for e in manifest["shards"]}
    for p in root.iterdir():  # leftovers of an interrupted run: partial temp files, unlisted shards
        if (p.name.startswith((".shard-", f".{MANIFEST_NAME}.")) and p.name.endswith(".tmp")) or (
                _SHARD_RE.match(p.name) and p.name not in listed):
            p.unlink()
    write_manifest(root, manifest)
    return manifest


def _owning_out(collect: Callable[..., dict[str, Any]]) -> Callable[..., dict[str, Any]]:
    """Run ``collect`` with its ``out`` directory checked, locked (:func:`psb_rl.utils.run_lock`) and, when it
    fails before storing a shard, left as it was found (no manifest that would block the next attempt)."""
    import inspect

    signature = inspect.signature(collect)

    @functools.wraps(collect)
    def wrapper(*args: Any, **kwargs: Any) -> dict[str, Any]:
        root = Path(signature.bind(*args, **kwargs).arguments["out"])
        created = not root.exists()
        ensure_writable_dir(root, "--out")
        try:
            with run_lock(root):
                return collect(*args, **kwargs)
        except BaseException:
            _discard_failed_start(root, created)
            raise

    return wrapper


def repair_hint(root: str | Path) -> str:
    """What to do about damaged shards: the repair command."""
    return (f"repair the collection with `python pretrain/collect_rollouts.py --out {root} --repair` (collects the "
            "damaged shards again, exactly: psb_rl.rollouts.repair_rollouts)")


def _free_shard_index(manifest: dict[str, Any]) -> int:
    """The lowest shard number not listed in the manifest (a repaired shard takes its old name back)."""
    used = {int(m.group(1)) for e in manifest["shards"] if (m := _SHARD_RE.match(e["file"]))}
    return next(i for i in itertools.count() if i not in used)


def _drop_damaged_shards(root: Path, manifest: dict[str, Any]) -> list[str]:
    """Remove missing or corrupted shards (files and manifest entries) and recount the totals.

    :return: the names dropped.
    """
    dropped = []
    for entry in list(manifest["shards"]):
        try:
            verify_shard(root, entry)
        except ShardChecksumError:
            dropped.append(entry["file"])
            manifest["shards"].remove(entry)
            (root / entry["file"]).unlink(missing_ok=True)
    if dropped:
        lengths = [n for e in manifest["shards"] for n in e["episode_lengths"]]
        manifest.update(num_shards=len(manifest["shards"]), num_episodes=len(lengths), num_frames=sum(lengths),
                        num_steps=sum(lengths) - len(lengths), complete=False)
        write_manifest(root, manifest)
    return dropped


def _is_empty_start(root: Path) -> bool:
    """Whether ``root``'s manifest lists no shard and no finished collection (a start that failed)."""
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and not manifest.get("shards") and not manifest.get("complete")


def _discard_failed_start(root: Path, created: bool) -> None:
    """After a failed collection: remove a manifest without shards, and the directory if this run made it."""
    if not root.is_dir():
        return
    if (root / MANIFEST_NAME).is_file() and _is_empty_start(root):
        (root / MANIFEST_NAME).unlink()
    if created and not any(root.iterdir()):
        root.rmdir()


def repair_rollouts(out: str | Path, num_envs: int = 1, progress: bool = True) -> dict[str, Any]:
    """Collect again the shards of ``out`` that are missing or corrupted, with the collection's own settings.

    Episode ``i`` is always reset with ``episode_seed(seed, i)`` (and the random policy's actions are seeded
    the same way), so the repaired shards hold the very episodes that were lost.

    :param out: a rollout directory.
    :param num_envs: parallel environments.
    :param progress: show a progress bar.
    :return: the final manifest.
    :raises RolloutError: when the directory holds no rollouts (nothing to repair from).
    """
    manifest = load_manifest(out)
    target = manifest.get("target") or {"episodes": manifest["num_episodes"]}
    policy = manifest["policy"]
    return collect_rollouts(
        manifest["env_id"], out, episodes=target.get("episodes"), steps=target.get("steps"), num_envs=num_envs,
        policy=policy, pixels=manifest["pixels"], resize=manifest["resize"], seed=manifest["seed"],
        episodes_per_shard=manifest["episodes_per_shard"], max_episode_steps=manifest["max_episode_steps"],
        env_kwargs=manifest["env_kwargs"], masks=False, compress=bool(manifest.get("compress", False)),
        progress=progress, repair=True, crop=manifest.get("crop", (0, 0, 0, 0)),
        gym_packages=manifest.get("gym_packages", ()),
    )


@_owning_out
def collect_rollouts(
    env_id: str,
    out: str | Path,
    episodes: int | None = None,
    steps: int | None = None,
    num_envs: int = 1,
    policy: str | Policy = "random",
    pixels: str = "obs",
    resize: Size | None = None,
    seed: int = 0,
    resume: bool = False,
    episodes_per_shard: int = 100,
    max_episode_steps: int | None = None,
    env_kwargs: dict[str, Any] | None = None,
    masks: bool = True,
    deterministic_policy: bool = False,
    compress: bool = False,
    progress: bool = True,
    repair: bool = False,
    crop: Sequence[int] = (0, 0, 0, 0),
    gym_packages: Sequence[str] = (),
) -> dict[str, Any]:
    """Run a policy in ``num_envs`` environments and store the episodes as shards (module docstring).

    :param env_id: any gymnasium id whose observation is an image ``(H, W, 3)`` uint8, or whose
        ``render()`` is (with ``pixels="render"``). ``PSB/`` and ``ALE/`` ids are registered on demand.
    :param out: rollout directory (created).
    :param episodes: number of whole episodes to store (exclusive with ``steps``).
    :param steps: store whole episodes until at least this many env steps are stored.
    :param num_envs: parallel environments (``AsyncVectorEnv`` workers when > 1).
    :param policy: ``"random"``, a path to a stable-baselines3 ``.zip`` (``predict`` on the raw
        observation), or a callable ``obs (num_envs, ...) -> actions (num_envs, ...)``.
    :param pixels: ``"obs"``: frames are the observations; ``"render"``: frames are ``env.render()``.
    :param resize: store frames resized to ``S × S`` or ``(H, W)`` (the training filter; masks by
        nearest neighbour), after ``crop``.
    :param seed: episode ``i`` is reset with seed ``episode_seed(seed, i)``.
    :param resume: continue the collection stored in ``out`` until the requested amount is stored.
    :param episodes_per_shard: episodes per shard file.
    :param max_episode_steps: override the registered time limit (e.g. to keep Pong episodes short).
    :param env_kwargs: extra ``gym.make`` kwargs.
    :param masks: store ground-truth masks where they can be had (recorded at the native frame resolution,
        resized with the frames by nearest neighbour), with the category of each label: ``PSB/`` envs' own (``return_masks=True``), MiniGrid's
        from the grid, Atari's from OCAtari when it is installed (:mod:`psb_rl.ground_truth`).
    :param deterministic_policy: SB3 policies act deterministically.
    :param compress: write ``np.savez_compressed`` shards (smaller; no memory-mapping when read).
    :param progress: show a tqdm bar (frames/s).
    :param crop: pixels removed from the ``(top, bottom, left, right)`` of each frame before resizing.
    :param gym_packages: packages to import so that they register ``env_id`` (``--gym-packages``).
    :param repair: like ``resume``, but shards that are missing or corrupted are first dropped from the
        manifest and then collected again (the same episodes: seeds are a function of ``(seed, index)``).
        :func:`repair_rollouts` does this with the settings stored in the manifest.
    :return: the final manifest; ``manifest["frame_pipeline"]`` is the
        :class:`psb_rl.frames.FramePipeline` (``to_dict``) applied to the stored frames and masks.
    :raises psb_rl.utils.RunDirError: when ``out`` is in use by another collection or cannot be written.
    """
    if (episodes is None) == (steps is None):
        raise ValueError("pass exactly one of episodes=... or steps=...")
    if (episodes if episodes is not None else steps) <= 0:  # type: ignore[operator]
        raise ValueError("episodes / steps must be positive")
    if pixels not in ("obs", "render"):
        raise ValueError(f"pixels must be 'obs' or 'render', got {pixels!r}")
    if num_envs < 1 or episodes_per_shard < 1:
        raise ValueError("num_envs and episodes_per_shard must be >= 1")
    root = Path(out)
    env_kwargs = dict(env_kwargs or {})
    if env_id.startswith("PSB/") and masks:
        env_kwargs.setdefault("return_masks", True)
    config = _config(env_id, env_kwargs, pixels, resize, seed, max_episode_steps, policy, crop, gym_packages)
    try:
        requested = FramePipeline(source="render" if pixels == "render" else "observation", crop=tuple(crop),
                                  size=resize)
    except FramePipelineError as error:
        raise RolloutError(str(error)) from None

    def make_new() -> dict[str, Any]:
        frame_shape, has_masks, layout, pipeline, categories = _probe(
            env_id, env_kwargs, max_episode_steps, pixels, episode_seed(seed, 0), requested, gym_packages,
            ground_truth=masks)
        manifest = _new_manifest(config, frame_shape, has_masks, episodes_per_shard, categories)
        manifest["frame_pipeline"] = pipeline.to_dict()
        manifest["frame_layout"] = layout
        return manifest

    ensure_registered(env_id, gym_packages)
    # validate the env (clear error) before touching the directory
    fresh = None if (root / MANIFEST_NAME).is_file() else make_new()
    manifest = _open_or_create(root, resume, config, lambda: fresh or make_new(), repair=repair)
    manifest.setdefault("compress", compress)
    manifest["target"] = {"episodes": episodes} if episodes is not None else {"steps": steps}
    done = {i for e in manifest["shards"] for i in e["episode_indices"]}
    todo: Iterator[int] = (i for i in itertools.count() if i not in done)
    if episodes is not None:
        todo = itertools.islice(todo, max(0, episodes - len(done)))

    def finished() -> bool:
        if episodes is not None:
            return manifest["num_episodes"] + len(pending) >= episodes
        return manifest["num_steps"] + sum(len(ep.actions) for ep in pending) >= steps  # type: ignore[operator]

    pending: list[_Episode] = []
    pipeline = (FramePipeline.from_dict(manifest["frame_pipeline"]) if "frame_pipeline" in manifest
                else FramePipeline(source=requested.source, size=resize))  # collected before pipelines were recorded
    if not finished():
        _run(manifest, root, todo, finished, pending, num_envs, policy, deterministic_policy, pixels, pipeline,
             seed, episodes_per_shard, max_episode_steps, env_kwargs, compress, progress)
    if pending:
        _write_shard(root, manifest, pending, pipeline, compress)
    manifest["complete"] = True
    write_manifest(root, manifest)
    return manifest


def _run(manifest: dict[str, Any], root: Path, todo: Iterator[int], finished: Callable[[], bool],
         pending: list[_Episode], num_envs: int, policy: str | Policy, deterministic: bool, pixels: str,
         pipeline: FramePipeline, seed: int, episodes_per_shard: int, max_episode_steps: int | None,
         env_kwargs: dict[str, Any], compress: bool, progress: bool) -> None:
    """The collection loop (see :func:`collect_rollouts`)."""
    from tqdm.auto import tqdm

    env_id = manifest["env_id"]
    has_masks = manifest["has_masks"]
    fn = functools.partial(make_env, env_id, env_kwargs, max_episode_steps, pixels == "render",
                           manifest.get("gym_packages", ()))
    if has_masks:
        from psb_rl.ground_truth import ground_truth_factory

        fn = ground_truth_factory(fn)
    vec_kwargs = {"autoreset_mode": gym.vector.AutoresetMode.DISABLED}
    # with --pixels render the observations may be anything (MiniGrid: a dict with text), which shared memory
    # cannot hold; image observations are shared
    venv: gym.vector.VectorEnv = (gym.vector.AsyncVectorEnv([fn] * num_envs, shared_memory=pixels == "obs", **vec_kwargs)
                                  if num_envs > 1
                                  else gym.vector.SyncVectorEnv([fn], **vec_kwargs))
    act = load_policy(policy, deterministic, venv.single_observation_space, venv.single_action_space)
    reset_policy = getattr(act, "reset", None)  # e.g. a slot agent forgets the envs that start anew
    spaces = [venv.single_action_space for _ in range(num_envs)]
    if act is None:
        import copy

        spaces = [copy.deepcopy(venv.single_action_space) for _ in range(num_envs)]
    current: list[_Episode | None] = [None] * num_envs

    def assign(i: int) -> int | None:
        idx = next(todo, None)
        current[i] = _Episode(idx) if idx is not None else None
        if idx is not None:
            ep_seed = episode_seed(seed, idx)
            spaces[i].seed(ep_seed)
            return ep_seed
        return None

    def record(obs: np.ndarray, infos: dict[str, Any], which: np.ndarray) -> None:
        frames = venv.call("render") if pixels == "render" else obs
        for i in np.flatnonzero(which):
            ep = current[i]
            if ep is None:
                continue
            ep.frames.append(np.array(frames[i], dtype=np.uint8, copy=True))
            if has_masks:
                if "masks" not in infos or not infos["_masks"][i]:
                    raise RolloutError(f"{env_id} did not return info['masks'] on every step")
                ep.masks.append(np.array(infos["masks"][i], copy=True))
                if manifest.get("mask_categories"):
                    ep.mask_categories.append(np.array(infos["mask_categories"][i], copy=True))

    bar = tqdm(total=None, unit="frame", unit_scale=True, disable=not progress, desc=f"collect {env_id}")
    try:
        seeds = [assign(i) for i in range(num_envs)]
        obs, infos = venv.reset(seed=seeds)
        if reset_policy is not None:
            reset_policy()
        record(obs, infos, np.ones(num_envs, dtype=bool))
        while True:
            if act is None:
                actions = np.stack([np.asarray(sp.sample()) for sp in spaces])
            else:
                actions = np.asarray(act(obs))
            obs, rewards, terminated, truncated, infos = venv.step(actions)
            active = np.array([ep is not None for ep in current])
            record(obs, infos, active)
            bar.update(int(active.sum()))
            dones = np.logical_or(terminated, truncated)
            for i in np.flatnonzero(active):
                ep = current[i]
                assert ep is not None
                ep.actions.append(np.asarray(actions[i]))
                ep.rewards.append(float(rewards[i]))
                ep.terminated.append(bool(terminated[i]))
                ep.truncated.append(bool(truncated[i]))
                if dones[i]:
                    pending.append(ep)
                    current[i] = None
                    if finished():
                        return
                    if len(pending) >= episodes_per_shard:
                        _write_shard(root, manifest, pending, pipeline, compress)
                        pending.clear()
                        bar.set_postfix(episodes=manifest["num_episodes"], shards=manifest["num_shards"])
            if not any(ep is not None for ep in current) and not dones.any():
                return  # nothing left to run
            if dones.any():
                mask = dones.astype(bool)
                seeds = [assign(i) if mask[i] else None for i in range(num_envs)]
                if not any(ep is not None for ep in current):
                    return
                obs, new_infos = venv.reset(seed=seeds, options={"reset_mask": mask})
                if reset_policy is not None:
                    reset_policy(mask)
                record(obs, new_infos, mask)
    finally:
        bar.close()
        venv.close()

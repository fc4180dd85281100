"""Collect environment videos into checksummed shards plus a manifest (the data format of §4).

The format (shard layout, manifest, checksums, readers) is :mod:`psb_rl.shards`; its names are importable from
here too. This module runs the environments: it probes an env, turns the ``policy`` argument into actions,
and stores whole episodes shard by shard.

Episode ``i`` is always reset with seed :func:`episode_seed(seed, i) <episode_seed>` and (for the
random policy) samples actions from an action space seeded from ``(seed, i)``, so the collected episodes do not depend on the
number of envs nor on interruptions: ``resume=True`` finishes exactly the requested amount.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import itertools
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np

from psb_rl.environments import ensure_registered, make_env
from psb_rl.frames import FramePipeline, FramePipelineError, Size, newest_rgb
from psb_rl.shards import (
    FORMAT_VERSION,
    MANIFEST_NAME,
    RolloutError,
    ShardChecksumError,
    append_shard,
    check_no_orphan_shards,
    discard_failed_start,
    drop_damaged_shards,
    episode_seed,
    is_empty_start,
    load_manifest,
    load_shard,
    load_shard_episodes,
    manifest_record,
    new_manifest,
    no_rollouts_message,
    orphan_shards,
    rebuild_manifest,
    remove_leftovers,
    repair_hint,
    sha256_file,
    shard_name,
    verify_rollouts,
    verify_shard,
    write_manifest,
)
from psb_rl.utils import ensure_writable_dir, run_lock

Policy = Callable[[np.ndarray], np.ndarray]



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
                layout = pipeline.check_space(env.observation_space, f"{env_id} observations", channel_stack=False)
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
                action_space: gym.Space | None = None, frame_space: gym.Space | None = None) -> Policy | None:
    """Turn the ``policy`` argument into a batched callable (``None`` = uniform random).

    An agent's ``.zip`` is loaded without unpickling (:func:`psb_rl.agent_io.load_agent_policy`): only
    agents of ``agents/train_ppo.py`` (slots, pixels or state; the run's ``args.json`` beside the zip)
    are accepted. The callable may have a ``reset(mask)`` method, called when envs start new episodes.

    :param policy: ``"random"``, a path to an agent's ``model.zip``, or a callable ``obs_batch -> actions``.
    :param deterministic: use the agent's deterministic action.
    :param observation_space: one env's observation space (needed for a ``.zip``).
    :param action_space: one env's action space (needed for a ``.zip``).
    :param frame_space: the frames the collection stores (after its frame pipeline), which a slot or pixel
        agent's ``.zip`` reads instead of the observations (its ``reads_frames`` is then True).
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

    return load_agent_policy(path, observation_space, action_space, deterministic, frame_space=frame_space)



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



def _write_shard(root: Path, manifest: dict[str, Any], episodes: list[_Episode], pipeline: FramePipeline,
                 compress: bool) -> None:
    """Write one shard atomically, then the updated manifest atomically (:func:`psb_rl.shards.append_shard`).

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
    append_shard(root, manifest, arrays, compress)


def _open_or_create(root: Path, resume: bool, config: dict[str, Any], make_new: Callable[[], dict[str, Any]],
                    repair: bool = False) -> dict[str, Any]:
    root.mkdir(parents=True, exist_ok=True)
    check_no_orphan_shards(root)  # shards whose manifest was lost are never collected over
    if (root / MANIFEST_NAME).is_file() and is_empty_start(root):
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
            drop_damaged_shards(root, manifest)
        for entry in manifest["shards"]:
            verify_shard(root, entry)
    else:
        manifest = make_new()
    remove_leftovers(root, manifest)  # of an interrupted run: partial temp files, unlisted shards
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
            discard_failed_start(root, created)
            raise

    return wrapper



def repair_rollouts(out: str | Path, num_envs: int = 1, progress: bool = True) -> dict[str, Any]:
    """Collect again the shards of ``out`` that are missing or corrupted, with the collection's own settings.

    Episode ``i`` is always reset with ``episode_seed(seed, i)`` (and the random policy's actions are seeded
    the same way), so the repaired shards hold the very episodes that were lost.

    :param out: a rollout directory.
    :param num_envs: parallel environments.
    :param progress: show a progress bar.
    :return: the final manifest.
    A directory whose ``manifest.json`` was lost gets one rebuilt from its intact shards (see
    :func:`psb_rl.shards.rebuild_manifest`: the collection settings are then unknown, so shards that are
    missing later cannot be collected again); no shard is deleted or rewritten.

    :raises RolloutError: when the directory holds no rollouts (nothing to repair from).
    """
    if orphan_shards(out):
        return _rebuild_manifest(Path(out))
    manifest = load_manifest(out)
    if manifest.get("settings_unknown"):
        damaged = []
        for entry in manifest["shards"]:
            try:
                verify_shard(out, entry)
            except ShardChecksumError:
                damaged.append(entry["file"])
        if damaged:
            raise RolloutError(
                f"{out}: shard(s) {', '.join(damaged)} are missing or corrupted, and this manifest was rebuilt from "
                "shards, so the settings to collect them again are unknown. Restore those files, or move "
                f"{MANIFEST_NAME} away and run --repair again to rebuild it from the intact shards")
        return manifest
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


def _rebuild_manifest(root: Path) -> dict[str, Any]:
    """Write a manifest rebuilt from the shards of ``root`` (which lost its own), with ``root`` locked."""
    ensure_writable_dir(root, "--out")
    with run_lock(root):
        if not orphan_shards(root):  # another run wrote a manifest meanwhile
            return load_manifest(root)
        manifest, skipped = rebuild_manifest(root)
        if skipped:
            manifest["left_out_shards"] = skipped
        write_manifest(root, manifest)
        return manifest


def _check_request(episodes: int | None, steps: int | None, pixels: str, num_envs: int,
                   episodes_per_shard: int) -> None:
    """Reject arguments no collection can use (:func:`collect_rollouts`).

    :raises ValueError: naming the argument.
    """
    if (episodes is None) == (steps is None):
        raise ValueError("pass exactly one of episodes=... or steps=...")
    if (episodes if episodes is not None else steps) <= 0:  # type: ignore[operator]
        raise ValueError("episodes / steps must be positive")
    if pixels not in ("obs", "render"):
        raise ValueError(f"pixels must be 'obs' or 'render', got {pixels!r}")
    if num_envs < 1 or episodes_per_shard < 1:
        raise ValueError("num_envs and episodes_per_shard must be >= 1")


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
    _check_request(episodes, steps, pixels, num_envs, episodes_per_shard)
    root = Path(out)
    check_no_orphan_shards(root)  # before probing the env: shards whose manifest was lost are never collected over
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
        manifest = new_manifest(config, frame_shape, has_masks, episodes_per_shard, categories)
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
        plan = CollectionPlan(num_envs=num_envs, policy=policy, deterministic=deterministic_policy, pixels=pixels,
                              pipeline=pipeline, seed=seed, episodes_per_shard=episodes_per_shard,
                              max_episode_steps=max_episode_steps, env_kwargs=env_kwargs, compress=compress,
                              progress=progress)
        _run(plan, manifest, root, todo, finished, pending)
    if pending:
        _write_shard(root, manifest, pending, pipeline, compress)
    manifest["complete"] = True
    write_manifest(root, manifest)
    return manifest

@dataclasses.dataclass(frozen=True)
class CollectionPlan:
    """The settings of one collection loop (see :func:`collect_rollouts` for each)."""

    num_envs: int
    policy: str | Policy
    deterministic: bool
    pixels: str
    pipeline: FramePipeline
    """applied to the frames and masks of every shard written"""
    seed: int
    episodes_per_shard: int
    max_episode_steps: int | None
    env_kwargs: dict[str, Any]
    compress: bool
    progress: bool


def _run(plan: CollectionPlan, manifest: dict[str, Any], root: Path, todo: Iterator[int],
         finished: Callable[[], bool], pending: list[_Episode]) -> None:
    """The collection loop (see :func:`collect_rollouts`): runs episodes ``todo`` until ``finished()``, writing
    a shard of ``pending`` episodes every ``plan.episodes_per_shard``; the last ones stay in ``pending``."""
    from tqdm.auto import tqdm

    collection = _Collection(plan, manifest, root, todo, finished, pending)
    bar = tqdm(total=None, unit="frame", unit_scale=True, disable=not plan.progress,
               desc=f"collect {manifest['env_id']}")
    try:
        collection.run(bar)
    finally:
        bar.close()
        collection.venv.close()


def _vector_env(plan: CollectionPlan, manifest: dict[str, Any]) -> gym.vector.VectorEnv:
    """``plan.num_envs`` copies of the manifest's env (with its ground truth when it stores masks)."""
    fn = functools.partial(make_env, manifest["env_id"], plan.env_kwargs, plan.max_episode_steps,
                           plan.pixels == "render", manifest.get("gym_packages", ()))
    if manifest["has_masks"]:
        from psb_rl.ground_truth import ground_truth_factory

        fn = ground_truth_factory(fn)
    vec_kwargs = {"autoreset_mode": gym.vector.AutoresetMode.DISABLED}
    # with --pixels render the observations may be anything (MiniGrid: a dict with text), which shared memory
    # cannot hold; image observations are shared
    if plan.num_envs > 1:
        return gym.vector.AsyncVectorEnv([fn] * plan.num_envs, shared_memory=plan.pixels == "obs", **vec_kwargs)
    return gym.vector.SyncVectorEnv([fn], **vec_kwargs)


class _Collection:
    """The state of :func:`_run`: the envs, the policy and the episode each env is running."""

    def __init__(self, plan: CollectionPlan, manifest: dict[str, Any], root: Path, todo: Iterator[int],
                 finished: Callable[[], bool], pending: list[_Episode]) -> None:
        self.plan, self.manifest, self.root = plan, manifest, root
        self.todo, self.finished, self.pending = todo, finished, pending
        self.env_id = manifest["env_id"]
        self.has_masks = manifest["has_masks"]
        self.venv = _vector_env(plan, manifest)
        venv, num_envs = self.venv, plan.num_envs
        frame_space = gym.spaces.Box(0, 255, tuple(manifest["frame_shape"]), np.uint8)
        self.act = load_policy(plan.policy, plan.deterministic, venv.single_observation_space,
                               venv.single_action_space, frame_space)
        # a slot or pixel agent acts on the frames as stored (through the collection's pipeline), which for
        # render-based pipelines are not the observations
        self.policy_reads_frames = bool(getattr(self.act, "reads_frames", False))
        self.frames: np.ndarray | None = None
        self.reset_policy = getattr(self.act, "reset", None)  # e.g. a slot agent forgets the envs that start anew
        self.spaces = [venv.single_action_space for _ in range(num_envs)]
        if self.act is None:
            import copy

            self.spaces = [copy.deepcopy(venv.single_action_space) for _ in range(num_envs)]
        self.current: list[_Episode | None] = [None] * num_envs

    def assign(self, i: int) -> int | None:
        """Start env ``i`` on the next episode to do; return its reset seed (None: nothing left)."""
        idx = next(self.todo, None)
        self.current[i] = _Episode(idx) if idx is not None else None
        if idx is not None:
            ep_seed = episode_seed(self.plan.seed, idx)
            self.spaces[i].seed(ep_seed)
            return ep_seed
        return None

    def record(self, obs: np.ndarray, infos: dict[str, Any], which: np.ndarray) -> None:
        """Append the frame (and masks) of the envs in ``which`` to their episodes."""
        frames = self.venv.call("render") if self.plan.pixels == "render" else obs
        self.frames = frames
        for i in np.flatnonzero(which):
            ep = self.current[i]
            if ep is None:
                continue
            ep.frames.append(np.array(frames[i], dtype=np.uint8, copy=True))
            if self.has_masks:
                if "masks" not in infos or not infos["_masks"][i]:
                    raise RolloutError(f"{self.env_id} did not return info['masks'] on every step")
                ep.masks.append(np.array(infos["masks"][i], copy=True))
                if self.manifest.get("mask_categories"):
                    ep.mask_categories.append(np.array(infos["mask_categories"][i], copy=True))

    def actions(self, obs: np.ndarray) -> np.ndarray:
        """The policy's actions (the random policy samples each env's seeded action space)."""
        if self.act is None:
            return np.stack([np.asarray(sp.sample()) for sp in self.spaces])
        if self.policy_reads_frames:
            obs = self.plan.pipeline.apply(np.stack(self.frames), self.manifest.get("frame_layout", "hwc"))
        return np.asarray(self.act(obs))

    def store_steps(self, actions: np.ndarray, rewards: np.ndarray, terminated: np.ndarray,
                    truncated: np.ndarray, active: np.ndarray, bar: Any) -> bool:
        """Append one step to the active episodes, move finished episodes to ``pending`` (writing a shard when
        enough are pending); return True when the collection is finished."""
        dones = np.logical_or(terminated, truncated)
        for i in np.flatnonzero(active):
            ep = self.current[i]
            assert ep is not None
            ep.actions.append(np.asarray(actions[i]))
            ep.rewards.append(float(rewards[i]))
            ep.terminated.append(bool(terminated[i]))
            ep.truncated.append(bool(truncated[i]))
            if dones[i]:
                self.pending.append(ep)
                self.current[i] = None
                if self.finished():
                    return True
                if len(self.pending) >= self.plan.episodes_per_shard:
                    _write_shard(self.root, self.manifest, self.pending, self.plan.pipeline, self.plan.compress)
                    self.pending.clear()
                    bar.set_postfix(episodes=self.manifest["num_episodes"], shards=self.manifest["num_shards"])
        return False

    def run(self, bar: Any) -> None:
        """Step the envs until the collection is finished or no episode is left to run."""
        num_envs = self.plan.num_envs
        seeds = [self.assign(i) for i in range(num_envs)]
        obs, infos = self.venv.reset(seed=seeds)
        if self.reset_policy is not None:
            self.reset_policy()
        self.record(obs, infos, np.ones(num_envs, dtype=bool))
        while True:
            actions = self.actions(obs)
            obs, rewards, terminated, truncated, infos = self.venv.step(actions)
            active = np.array([ep is not None for ep in self.current])
            self.record(obs, infos, active)
            bar.update(int(active.sum()))
            if self.store_steps(actions, rewards, terminated, truncated, active, bar):
                return
            dones = np.logical_or(terminated, truncated)
            if not any(ep is not None for ep in self.current) and not dones.any():
                return  # nothing left to run
            if dones.any():
                mask = dones.astype(bool)
                seeds = [self.assign(i) if mask[i] else None for i in range(num_envs)]
                if not any(ep is not None for ep in self.current):
                    return
                obs, new_infos = self.venv.reset(seed=seeds, options={"reset_mask": mask})
                if self.reset_policy is not None:
                    self.reset_policy(mask)
                self.record(obs, new_infos, mask)


__all__ = [
    "FORMAT_VERSION", "MANIFEST_NAME", "CollectionPlan", "Policy", "RolloutError", "ShardChecksumError",
    "collect_rollouts", "episode_seed", "load_manifest", "load_policy", "load_shard", "load_shard_episodes",
    "manifest_record", "no_rollouts_message", "repair_hint", "repair_rollouts", "sha256_file", "shard_name",
    "verify_rollouts", "verify_shard", "write_manifest",
]

"""The on-disk format of collected rollouts: checksummed shards plus a manifest (the data format of §4).

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

Episode ``i`` is always reset with seed :func:`episode_seed(seed, i) <episode_seed>`; shards are written
byte-for-byte reproducibly (:func:`save_npz`), so a damaged shard can be collected again with its old
checksum (:func:`psb_rl.rollouts.repair_rollouts`). Collection itself lives in :mod:`psb_rl.rollouts`.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import re
from pathlib import Path
from typing import Any

import numpy as np

from psb_rl.utils import atomic_path

FORMAT_VERSION: int = 1
MANIFEST_NAME: str = "manifest.json"
_SHARD_RE = re.compile(r"^shard-(\d{5,})\.npz$")


class RolloutError(ValueError):
    """A rollout directory is missing, inconsistent with the request, or corrupted."""


class ShardChecksumError(RolloutError):
    """A shard's sha256 does not match the manifest (the file is corrupted or was modified)."""


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


def orphan_shards(root: str | Path) -> list[str]:
    """The shard files of ``root`` when it has no ``manifest.json`` (its manifest was lost), sorted; else ``[]``."""
    root = Path(root)
    if not root.is_dir() or (root / MANIFEST_NAME).exists():
        return []
    return sorted(p.name for p in root.iterdir() if _SHARD_RE.match(p.name))


def orphan_shards_message(root: str | Path, names: list[str]) -> str:
    """The error text for shards without a manifest: nothing collects over them; what to do."""
    return (f"{root} holds {len(names)} shard file(s) ({names[0]}{', ...' if len(names) > 1 else ''}) but no "
            f"{MANIFEST_NAME}; they are left untouched. Rebuild the manifest from the intact shards with "
            f"`python pretrain/collect_rollouts.py --out {root} --repair`, or choose another --out / --data directory")


def check_no_orphan_shards(root: str | Path) -> None:
    """Refuse to collect into (or read from) a directory whose shards lost their manifest.

    :raises RolloutError: naming the shards and the repair command.
    """
    names = orphan_shards(root)
    if names:
        raise RolloutError(orphan_shards_message(root, names))


def load_manifest(root: str | Path) -> dict[str, Any]:
    """Read and sanity-check ``<root>/manifest.json``.

    :param root: rollout directory.
    :return: the manifest dict.
    :raises RolloutError: when the directory or manifest is missing, or of another format.
    """
    path = Path(root) / MANIFEST_NAME
    if not path.is_file():
        check_no_orphan_shards(root)
        raise RolloutError(no_rollouts_message(root))
    try:
        manifest = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise RolloutError(f"{path} is not valid JSON ({e}); the rollout directory is corrupted") from None
    if not isinstance(manifest, dict):
        raise RolloutError(f"{path} does not hold a JSON object; the rollout directory is corrupted")
    version = manifest.get("format_version")
    if version != FORMAT_VERSION:
        raise RolloutError(f"{path} has format_version {version!r}; this psb_rl reads version {FORMAT_VERSION}")
    check_manifest_fields(path, manifest)
    return manifest


_ENTRY_FIELDS = {"file": str, "sha256": str, "num_episodes": int, "episode_lengths": list, "episode_indices": list}
_TOTAL_FIELDS = ("num_shards", "num_episodes", "num_steps", "num_frames")


def check_manifest_fields(path: Path, manifest: dict[str, Any]) -> None:
    """Refuse a manifest whose fields are missing or of the wrong type (a hand-edited or damaged file).

    :raises RolloutError: naming the field.
    """
    def bad(what: str) -> RolloutError:
        return RolloutError(f"{path} is damaged: {what}; restore it, or rebuild it from the intact shards (move it "
                            f"away, then `python pretrain/collect_rollouts.py --out {path.parent} --repair`)")

    if not isinstance(manifest.get("shards"), list):
        raise bad("'shards' is missing or not a list")
    for name in _TOTAL_FIELDS:
        value = manifest.get(name)
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise bad(f"{name!r} is missing or not a count")
    for i, entry in enumerate(manifest["shards"]):
        if not isinstance(entry, dict):
            raise bad(f"shard entry {i} is not an object")
        for name, kind in _ENTRY_FIELDS.items():
            if not isinstance(entry.get(name), kind) or isinstance(entry.get(name), bool):
                raise bad(f"shard entry {i} has no valid {name!r}")
        if not _SHARD_RE.match(entry["file"]):
            raise bad(f"shard entry {i} names {entry['file']!r}, not a shard file (shard-NNNNN.npz)")
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 1 for n in entry["episode_lengths"]):
            raise bad(f"shard entry {i} has episode lengths that are not positive counts")
        if not all(isinstance(n, int) and not isinstance(n, bool) for n in entry["episode_indices"]):
            raise bad(f"shard entry {i} has episode indices that are not integers")
        if not len(entry["episode_lengths"]) == len(entry["episode_indices"]) == entry["num_episodes"] >= 1:
            raise bad(f"shard entry {i} has {entry['num_episodes']} episodes, {len(entry['episode_lengths'])} "
                      f"lengths and {len(entry['episode_indices'])} indices")
        if "num_frames" in entry and entry["num_frames"] != sum(entry["episode_lengths"]):
            raise bad(f"shard entry {i} has num_frames {entry['num_frames']}, its episode lengths sum to "
                      f"{sum(entry['episode_lengths'])}")
    frame_shape = manifest.get("frame_shape")
    if not (isinstance(frame_shape, list) and len(frame_shape) == 3 and frame_shape[-1] == 3
            and all(isinstance(n, int) and n >= 1 for n in frame_shape)):
        raise bad("'frame_shape' is not [H, W, 3]")


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


def new_manifest(config: dict[str, Any], frame_shape: tuple[int, ...], has_masks: bool,
                 episodes_per_shard: int, mask_categories: list[str] | None = None) -> dict[str, Any]:
    """The manifest of a collection that holds no shard yet.

    :param config: the collection settings (env id, pixels, resize, seed, policy...).
    :param frame_shape: shape of a stored frame.
    :param has_masks: whether shards carry masks.
    :param episodes_per_shard: episodes per shard file.
    :param mask_categories: names of the mask categories.
    """
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



def save_npz(handle: Any, arrays: dict[str, np.ndarray], compress: bool) -> None:
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



def repair_hint(root: str | Path) -> str:
    """What to do about damaged shards: the repair command."""
    return (f"repair the collection with `python pretrain/collect_rollouts.py --out {root} --repair` (collects the "
            "damaged shards again, exactly: psb_rl.rollouts.repair_rollouts)")


def free_shard_index(manifest: dict[str, Any], root: Path | None = None) -> int:
    """The lowest shard number not listed in the manifest (a repaired shard takes its old name back), and, given
    ``root``, whose file does not exist there (a shard file the collection did not list is never overwritten)."""
    used = {int(m.group(1)) for e in manifest["shards"] if (m := _SHARD_RE.match(e["file"]))}
    return next(i for i in itertools.count()
                if i not in used and (root is None or not (root / shard_name(i)).exists()))


SHARD_ARRAYS = ("frames", "episode_lengths", "episode_indices", "actions", "rewards", "terminated", "truncated")
"""The arrays every shard holds (see the module docstring)."""


def check_shard_arrays(name: str, data: dict[str, np.ndarray]) -> None:
    """Refuse a shard whose arrays are missing or disagree with each other (lengths, shapes, dtypes).

    :raises RolloutError: naming the shard and the first problem found.
    """
    missing = [key for key in SHARD_ARRAYS if key not in data]
    if missing:
        raise RolloutError(f"shard {name} has no {', '.join(missing)}")
    frames, lengths = data["frames"], data["episode_lengths"]
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise RolloutError(f"shard {name}: frames are {frames.dtype} {frames.shape}, not uint8 (F, H, W, 3)")
    if lengths.ndim != 1 or not np.issubdtype(lengths.dtype, np.integer) or (lengths < 1).any():
        raise RolloutError(f"shard {name}: episode_lengths are not positive counts")
    total, episodes = int(lengths.sum()), len(lengths)
    if frames.shape[0] != total or data["episode_indices"].shape != (episodes,):
        raise RolloutError(f"shard {name}: {frames.shape[0]} frames and {len(data['episode_indices'])} episode "
                           f"indices disagree with episode_lengths ({episodes} episodes, {total} frames)")
    for key in ("actions", "rewards", "terminated", "truncated"):
        if len(data[key]) != total - episodes:
            raise RolloutError(f"shard {name}: {key} has {len(data[key])} steps, episode_lengths say {total - episodes}")
    for key in ("masks", "mask_categories"):
        if key in data and len(data[key]) != total:
            raise RolloutError(f"shard {name}: {key} has {len(data[key])} frames, episode_lengths say {total}")


def check_shard_matches(name: str, data: dict[str, np.ndarray], entry: dict[str, Any], root: str | Path) -> None:
    """Refuse a shard whose arrays disagree with each other or with its manifest entry (its episode lengths and
    indices), so a reader never slices episodes at the wrong frames. Reads only shapes and the small arrays.

    :raises RolloutError: naming the shard and the repair command.
    """
    try:
        check_shard_arrays(name, data)
        if data["episode_lengths"].tolist() != entry["episode_lengths"] \
                or data["episode_indices"].tolist() != entry["episode_indices"]:
            raise RolloutError(f"shard {name}: its episodes disagree with its manifest entry")
    except RolloutError as error:
        raise RolloutError(f"{error}; {repair_hint(root)}") from None


def rebuild_manifest(root: Path) -> tuple[dict[str, Any], list[str]]:
    """A manifest for shards whose ``manifest.json`` was lost, from the shards that load and whose arrays agree.

    The collection settings (env, seed, pipeline...) are not in the shards: the rebuilt manifest records them as
    unknown (``settings_unknown``), so its shards can be trained on but not collected again. No file is deleted.

    :param root: rollout directory without a manifest.
    :return: the manifest (not yet written) and the names of the shards left out (unreadable or inconsistent).
    :raises RolloutError: when no shard is intact.
    """
    entries, skipped, frame_shape, has_masks = [], [], None, True
    for name in orphan_shards(root):
        try:
            data = load_shard(root / name)
            check_shard_arrays(name, data)
            shape = list(data["frames"].shape[1:])
            if frame_shape is not None and shape != frame_shape:
                raise RolloutError(f"shard {name} holds {shape} frames, other shards {frame_shape}")
        except Exception:
            skipped.append(name)
            continue
        frame_shape = shape
        has_masks = has_masks and "masks" in data
        lengths = data["episode_lengths"].tolist()
        entries.append({"file": name, "sha256": sha256_file(root / name), "num_episodes": len(lengths),
                        "episode_lengths": lengths, "episode_indices": data["episode_indices"].tolist(),
                        "num_frames": int(sum(lengths))})
    if not entries:
        raise RolloutError(f"cannot rebuild the manifest of {root}: none of its shards is intact "
                           f"({', '.join(skipped) or 'no shard files'})")
    lengths = [n for e in entries for n in e["episode_lengths"]]
    manifest = new_manifest({"env_id": None, "settings_unknown": True}, tuple(frame_shape), has_masks,
                            max(e["num_episodes"] for e in entries))
    manifest.update(shards=entries, num_shards=len(entries), num_episodes=len(lengths), num_frames=sum(lengths),
                    num_steps=sum(lengths) - len(lengths), complete=True, rebuilt_from_shards=True)
    return manifest, skipped


def drop_damaged_shards(root: Path, manifest: dict[str, Any]) -> list[str]:
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


def is_empty_start(root: Path) -> bool:
    """Whether ``root``'s manifest lists no shard and no finished collection (a start that failed)."""
    try:
        manifest = json.loads((root / MANIFEST_NAME).read_text())
    except (OSError, ValueError):
        return False
    return isinstance(manifest, dict) and not manifest.get("shards") and not manifest.get("complete")


def discard_failed_start(root: Path, created: bool) -> None:
    """After a failed collection: remove a manifest without shards, and the directory if this run made it."""
    if not root.is_dir():
        return
    if (root / MANIFEST_NAME).is_file() and is_empty_start(root):
        (root / MANIFEST_NAME).unlink()
    if created and not any(root.iterdir()):
        root.rmdir()


def append_shard(root: Path, manifest: dict[str, Any], arrays: dict[str, np.ndarray], compress: bool) -> None:
    """Write ``arrays`` as the next shard atomically, then the updated manifest atomically.

    :param root: rollout directory.
    :param manifest: its manifest (updated in place: the shard's entry and the totals).
    :param arrays: the shard's arrays (see the module docstring).
    :param compress: deflate the members.
    """
    name = shard_name(free_shard_index(manifest, root))
    with atomic_path(root / name) as tmp:  # .shard-00000.npz.<random>.tmp until complete
        with open(tmp, "wb") as f:
            save_npz(f, arrays, compress)
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


def remove_leftovers(root: Path, manifest: dict[str, Any]) -> None:
    """Delete what an interrupted run left in ``root``: partial temporary files, and the shard it stored but could
    not list (a run stopped between writing a shard and its manifest leaves it under the next free shard name:
    it is collected again, identically). Other shard files the manifest does not list are left alone.

    :param root: rollout directory.
    :param manifest: its manifest.
    """
    unlisted = root / shard_name(free_shard_index(manifest))
    for p in root.iterdir():
        if p.name.startswith((".shard-", f".{MANIFEST_NAME}.")) and p.name.endswith(".tmp"):
            p.unlink()
    unlisted.unlink(missing_ok=True)


__all__ = [
    "FORMAT_VERSION",
    "MANIFEST_NAME",
    "RolloutError",
    "ShardChecksumError",
    "append_shard",
    "check_no_orphan_shards",
    "episode_seed",
    "load_manifest",
    "load_shard",
    "load_shard_episodes",
    "manifest_record",
    "new_manifest",
    "no_rollouts_message",
    "orphan_shards",
    "rebuild_manifest",
    "repair_hint",
    "sha256_file",
    "shard_name",
    "verify_rollouts",
    "verify_shard",
    "write_manifest",
]

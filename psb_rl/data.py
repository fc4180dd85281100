"""A torch ``Dataset`` of fixed-length clips from a rollout directory (see :mod:`psb_rl.shards`).

Indexing: the dataset enumerates **every valid window** ``(episode, start)`` with
``start = 0, stride, 2·stride, …`` and ``start + clip_len <= T_episode``, so a clip never crosses an
episode boundary (episodes shorter than ``clip_len`` contribute nothing). Shuffle with the
``DataLoader``.

Split: episodes are assigned to ``"train"`` or ``"val"`` deterministically from their global
episode index and ``split_seed`` (a hash, so adding episodes never moves existing ones between
splits); ``"all"`` uses every episode. When the hash leaves ``val`` empty although
``val_fraction > 0`` and there are >= 2 episodes, the episode with the smallest hash is held out.

Memory: nothing is read at construction except the manifest (and, with ``verify=True``, each
shard's bytes once for its sha256). Shards are opened lazily in each process (DataLoader workers
included; no file handle or array is pickled). Uncompressed shards (the default written by
:func:`psb_rl.rollouts.collect_rollouts`) are memory-mapped member by member, so memory stays flat
for datasets larger than RAM; compressed shards are loaded whole into a small LRU cache.
Arrays are never unpickled.
"""

from __future__ import annotations

import hashlib
import struct
import zipfile
from collections import OrderedDict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

from psb_rl.shards import (
    RolloutError,
    ShardChecksumError,
    check_shard_matches,
    load_manifest,
    no_rollouts_message,
    repair_hint,
    verify_shard,
)

SPLITS = ("train", "val", "all")


def _split_unit(episode_index: int, split_seed: int) -> float:
    """A deterministic number in [0, 1) per (episode, seed)."""
    digest = hashlib.sha256(f"{split_seed}:{episode_index}".encode()).digest()
    return int.from_bytes(digest[:8], "little") / 2.0**64


def open_npz(path: str | Path, mmap: bool = True) -> dict[str, np.ndarray]:
    """Open the arrays of an ``.npz`` file without unpickling.

    Members stored uncompressed are memory-mapped (read-only) when ``mmap`` is true; otherwise (or
    for compressed archives) they are read into memory.

    :param path: the ``.npz`` file.
    :param mmap: memory-map uncompressed members.
    :return: ``{name: array}`` (names without the ``.npy`` suffix).
    """
    path = Path(path)
    with zipfile.ZipFile(path) as zf:
        infos = zf.infolist()
    if not mmap or any(i.compress_type != zipfile.ZIP_STORED for i in infos):
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    out: dict[str, np.ndarray] = {}
    with open(path, "rb") as f:
        for info in infos:
            f.seek(info.header_offset)
            header = f.read(30)
            if header[:4] != b"PK\x03\x04":
                raise RolloutError(f"{path} is not a valid npz (bad local header of {info.filename})")
            name_len, extra_len = struct.unpack("<HH", header[26:30])
            f.seek(info.header_offset + 30 + name_len + extra_len)
            version = np.lib.format.read_magic(f)
            if version == (1, 0):
                shape, fortran, dtype = np.lib.format.read_array_header_1_0(f)
            else:
                shape, fortran, dtype = np.lib.format.read_array_header_2_0(f)
            if dtype.hasobject:
                raise RolloutError(f"{path} member {info.filename} holds Python objects; refusing to unpickle")
            name = info.filename[:-4] if info.filename.endswith(".npy") else info.filename
            if int(np.prod(shape)) == 0:
                out[name] = np.zeros(shape, dtype=dtype)
            else:
                out[name] = np.memmap(path, dtype=dtype, mode="r", shape=shape,
                                      order="F" if fortran else "C", offset=f.tell())
    return out


class RolloutDataset(Dataset):
    """Clips of ``clip_len`` consecutive frames from a rollout directory (module docstring).

    Each item is a dict with ``"frames"``: uint8 tensor ``(clip_len, H, W, 3)`` and, when the
    rollouts have masks, ``"masks"``: int64 tensor ``(clip_len, H, W)`` (0 = background) and, when they
    name the masks' categories, ``"mask_categories"``: int64 ``(clip_len, L)``, the category index of each
    label (``-1``: none; names in the manifest's ``mask_categories``).

    :param root: rollout directory written by :func:`psb_rl.rollouts.collect_rollouts`.
    :param clip_len: frames per clip ``T``.
    :param split: ``"train"``, ``"val"`` (held-out episodes) or ``"all"``.
    :param val_fraction: fraction of episodes held out for ``"val"``.
    :param split_seed: seed of the episode split.
    :param stride: distance between the starts of consecutive windows of one episode.
    :param image_size: resize frames (and masks, nearest) to this square size with
        :mod:`psb_rl.preprocessing`; ``None`` keeps the stored size.
    :param verify: check every shard's sha256 against the manifest at construction.
    :param with_masks: return masks when the rollouts have them.
    :param cache_shards: how many opened shards each process keeps (LRU).
    :param mmap: memory-map uncompressed shards (otherwise load each shard into memory).
    """

    def __init__(
        self,
        root: str | Path,
        clip_len: int,
        split: str = "train",
        val_fraction: float = 0.1,
        split_seed: int = 0,
        stride: int = 1,
        image_size: int | None = None,
        verify: bool = True,
        with_masks: bool = True,
        cache_shards: int = 2,
        mmap: bool = True,
    ) -> None:
        if split not in SPLITS:
            raise ValueError(f"split must be one of {SPLITS}, got {split!r}")
        if clip_len < 1 or stride < 1:
            raise ValueError("clip_len and stride must be >= 1")
        if not 0.0 <= val_fraction < 1.0:
            raise ValueError(f"val_fraction must be in [0, 1), got {val_fraction}")
        self.root = Path(root)
        if not self.root.is_dir():
            raise RolloutError(no_rollouts_message(root))
        self.manifest = load_manifest(self.root)
        if not self.manifest["shards"]:
            raise RolloutError(no_rollouts_message(root))
        if verify:
            for entry in self.manifest["shards"]:
                verify_shard(self.root, entry)
        self.clip_len, self.split, self.stride = int(clip_len), split, int(stride)
        self.image_size = image_size
        self.has_masks = bool(self.manifest.get("has_masks")) and with_masks
        self.cache_shards, self.mmap = max(1, int(cache_shards)), mmap
        self.shard_files = [e["file"] for e in self.manifest["shards"]]

        # every episode: (shard, frame offset in shard, length, global episode index)
        records = []
        for s, entry in enumerate(self.manifest["shards"]):
            offset = 0
            for length, index in zip(entry["episode_lengths"], entry["episode_indices"]):
                records.append((s, offset, int(length), int(index)))
                offset += int(length)
        units = np.array([_split_unit(r[3], split_seed) for r in records])
        is_val = units < val_fraction
        if val_fraction > 0 and not is_val.any() and len(records) >= 2:
            is_val[int(np.argmin(units))] = True
        keep = {"train": ~is_val, "val": is_val, "all": np.ones_like(is_val)}[split]
        self._episodes = np.array([r for r, k in zip(records, keep) if k], dtype=np.int64).reshape(-1, 4)
        if len(self._episodes) == 0:
            raise RolloutError(f"split {split!r} of {root} holds no episodes ({len(records)} in total, "
                               f"val_fraction={val_fraction})")
        # all valid windows (episode row, start)
        ep_rows, starts = [], []
        for row, (_, _, length, _) in enumerate(self._episodes):
            s = np.arange(0, int(length) - self.clip_len + 1, self.stride)
            ep_rows.append(np.full(len(s), row, dtype=np.int64))
            starts.append(s)
        self._window_episode = np.concatenate(ep_rows) if ep_rows else np.zeros(0, np.int64)
        self._window_start = np.concatenate(starts) if starts else np.zeros(0, np.int64)
        if len(self._window_start) == 0:
            longest = int(self._episodes[:, 2].max())
            raise RolloutError(f"no clip of {clip_len} frames fits in the {split!r} episodes of {root} "
                               f"(longest has {longest} frames); use a smaller clip_len")
        self._cache: OrderedDict[int, dict[str, np.ndarray]] = OrderedDict()

    # ------------------------------------------------------------------ pickling
    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        state["_cache"] = OrderedDict()  # opened shards are per process
        return state

    # --------------------------------------------------------------------- access
    def _shard(self, s: int) -> dict[str, np.ndarray]:
        if s in self._cache:
            self._cache.move_to_end(s)
            return self._cache[s]
        path = self.root / self.shard_files[s]
        if not path.is_file():
            raise ShardChecksumError(f"shard {path} listed in the manifest is missing; {repair_hint(self.root)}")
        try:
            arrays = open_npz(path, mmap=self.mmap)
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile) as error:
            raise ShardChecksumError(f"shard {path} cannot be read ({type(error).__name__}: "
                                     f"{' '.join(str(error).split())[:120]}); {repair_hint(self.root)}") from None
        check_shard_matches(self.shard_files[s], arrays, self.manifest["shards"][s], self.root)
        if self.has_masks and "masks" not in arrays:
            raise RolloutError(f"shard {path} has no masks though the manifest says it has; {repair_hint(self.root)}")
        self._cache[s] = arrays
        while len(self._cache) > self.cache_shards:
            self._cache.popitem(last=False)
        return arrays

    def _read(self, row: int, start: int, length: int) -> dict[str, torch.Tensor]:
        from psb_rl.preprocessing import resize_uint8_frames
        from psb_rl.sizes import resize_masks

        s, offset, _, _ = (int(v) for v in self._episodes[row])
        arrays = self._shard(s)
        sl = slice(offset + start, offset + start + length)
        frames = np.array(arrays["frames"][sl])
        if self.image_size is not None:
            frames = resize_uint8_frames(frames, self.image_size)
        item = {"frames": torch.from_numpy(np.ascontiguousarray(frames))}
        if self.has_masks:
            masks = np.array(arrays["masks"][sl])
            if self.image_size is not None:
                masks = resize_masks(masks, self.image_size)
            item["masks"] = torch.from_numpy(masks.astype(np.int64))
            if "mask_categories" in arrays:  # category index of each mask label, per frame (T, L)
                item["mask_categories"] = torch.from_numpy(np.array(arrays["mask_categories"][sl], dtype=np.int64))
        return item

    def __len__(self) -> int:
        return len(self._window_start)

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """Clip ``i``: ``{"frames": uint8 (T, H, W, 3), "masks": int64 (T, H, W)}``."""
        if not -len(self) <= i < len(self):
            raise IndexError(f"clip index {i} out of range for {len(self)} clips")
        return self._read(int(self._window_episode[i]), int(self._window_start[i]), self.clip_len)

    def window(self, i: int) -> tuple[int, int]:
        """``(global episode index, start frame)`` of clip ``i``."""
        return int(self._episodes[self._window_episode[i], 3]), int(self._window_start[i])

    # ------------------------------------------------------------------ episodes
    @property
    def num_episodes(self) -> int:
        """Episodes in this split."""
        return len(self._episodes)

    @property
    def episode_indices(self) -> list[int]:
        """Global episode indices (reset seed − collection seed) of this split, in storage order."""
        return [int(v) for v in self._episodes[:, 3]]

    def load_episode(self, i: int) -> dict[str, Any]:
        """Whole episode ``i`` of this split (``0 <= i < num_episodes``).

        :param i: position in this split.
        :return: ``{"frames": uint8 (T, H, W, 3), "masks": int64 (T, H, W) if present,
            "episode_index": int}``.
        """
        length = int(self._episodes[i, 2])
        item: dict[str, Any] = self._read(i, 0, length)
        item["episode_index"] = int(self._episodes[i, 3])
        return item

    def episodes(self) -> Iterator[dict[str, Any]]:
        """Iterate over the whole episodes of this split (see :meth:`load_episode`)."""
        for i in range(self.num_episodes):
            yield self.load_episode(i)

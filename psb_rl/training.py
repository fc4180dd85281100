"""PSB pretraining: the loop behind ``pretrain/train_psb.py``.

Single process or ``torchrun`` (DistributedDataParallel; gloo on CPU, nccl on CUDA). Batches are a
pure function of ``(seed, step, rank)``, so a resumed run sees exactly the batches an uninterrupted
run would, and ends with the same weights.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import random
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
import torch.distributed as dist
import torch.nn.functional as F
from torch.utils.data import ConcatDataset, DataLoader, Sampler

from psb_rl.checkpoint import save_checkpoint
from psb_rl.cli import bounded
from psb_rl.config import PSBConfig
from psb_rl.evaluation import evaluate_episodes, scalar_metrics
from psb_rl.frames import pipeline_of_manifest
from psb_rl.health import collapse_warning, health_fields, health_postfix
from psb_rl.model import PSBAutoencoder
from psb_rl.preprocessing import preprocess_frames
from psb_rl.utils import (
    RunDirError,
    atomic_path,
    ensure_writable_dir,
    owned_run_dir,
    resolve_device,
    set_torch_threads,
    write_json,
)

TRAIN_STATE_NAME = "train_state.pt"
RUN_FILES = ("psb.ckpt", TRAIN_STATE_NAME, "metrics.json", "loss_curve.png", "tensorboard")
"""What a run writes to --out: their presence means a (finished or partial) run is there."""
RESUME_FIXED = ("clip_len", "batch_size", "seed", "val_fraction")
"""Arguments (besides the model's) that a resumed run must share with the run it continues."""
_MODEL = PSBConfig()  # the model fields of TrainArgs default to PSBConfig's: one source of defaults


class TrainingDivergedError(RuntimeError):
    """The loss became NaN or infinite; the last good checkpoint is kept."""


@dataclass
class TrainArgs:
    """Arguments of ``pretrain/train_psb.py`` (each field is a ``--kebab-case`` flag)."""

    data: str = "data/random_objects"
    """rollout directory (shards + manifest); collected from --env first if it holds no rollouts (with
    --preset: data/<env id>)"""
    extra_data: list[str] = field(default_factory=list)
    """more rollout directories whose episodes are added to --data's training clips (e.g. an agent's rollouts,
    so that the encoder sees what the agent will see: an open door, a carried key); same frame pipeline as
    --data. The held-out evaluation stays on --data's episodes"""
    out: str = "runs/psb"
    """run directory: psb.ckpt, metrics.json, GIFs, loss curve, TensorBoard, train_state.pt (with --preset:
    runs/<env id>)"""
    preset: str | None = None
    """builtin | minigrid | atari: a pretraining recipe, its collection included (psb_rl.presets; flags given
    explicitly override it)"""
    env: str = "PSB/RandomObjects-v0"
    """environment to collect the default dataset from when --data is missing"""
    gym_packages: list[str] = dataclasses.field(default_factory=list)
    """extra packages to import that register --env (as RL Zoo's --gym-packages)"""
    torch_threads: int | None = bounded(None, min=1)
    """torch CPU threads (None: torch's default, one per core; set 1 when other jobs share the cores)"""
    collect_episodes: int = bounded(300, min=0)
    """episodes to collect when --data is missing"""
    collect_max_episode_steps: int | None = None
    """episode cap when collecting (None: the env's own time limit)"""
    pixels: Literal["obs", "render"] = "obs"
    """frame source when collecting: obs (the observations) or render (env.render(), e.g. MiniGrid)"""
    crop: tuple[int, int, int, int] = (0, 0, 0, 0)
    """pixels cut off the top, bottom, left and right of each frame when collecting (e.g. Atari score bars)"""
    resize: list[int] | None = None
    """frame size stored when collecting: N (N x N) or H W (None: as the env gives them)"""
    env_kwargs: str | None = None
    """JSON dict of extra gym.make arguments when collecting (e.g. '{"highlight": false}'); recorded in the
    checkpoint's frame pipeline, so the agent's envs are made with them"""
    steps: int = bounded(1000, min=1)
    """optimizer steps"""
    batch_size: int = bounded(16, min=1)
    """clips per step (global: split across torchrun ranks)"""
    clip_len: int = bounded(6, min=1)
    """frames per training clip (longer than --window so the model sees the band)"""
    lr: float = bounded(1e-3, gt=0)
    """peak AdamW learning rate"""
    warmup_steps: int = bounded(250, min=0)
    """linear warm-up steps, followed by cosine decay to 10% of --lr"""
    weight_decay: float = bounded(0.0, min=0)
    """AdamW weight decay"""
    grad_clip: float = bounded(1.0, gt=0)
    """clip the global gradient norm to this value"""
    mask_consistency: float = bounded(0.0, min=0)
    """weight of the temporal mask-consistency term (the fraction of pixels that change slot between
    consecutive frames where the image stays still, see mask_change) added to the pixel MSE: reconstruction
    alone does not care which slot holds an object, so slots swap objects over time. Off by default: with
    --colour-values, 0.1 raised video FG-ARI in the runs that bound objects, but it cannot rescue a run
    heading for one slot per several objects (no slot ever changes there); see docs/pretraining.md"""
    mask_consistency_start: int = bounded(500, min=0)
    """step at which the temporal terms (--mask-consistency, --slot-contrast) start; each
    weight then grows linearly to its value over as many steps again (from step 0 the mask term favours
    the one-slot-takes-all plateau that slots must first leave on reconstruction alone)"""
    slot_contrast: float = bounded(0.0, min=0)
    """weight of the slot-contrast term (see slot_contrast) added to the pixel MSE: each slot must pick
    itself one frame later out of every slot of the (per-rank) batch at that frame (InfoNCE), so a slot
    that trades its object costs. Off by default: 0.01 for 4,000 steps gave 0.73-0.84 video FG-ARI over
    four seeds on a GPU but 0.72 and 0.76 over two on this CPU, no better than the default recipe, and
    started before step 500 it kept slots from binding (see docs/pretraining.md)"""
    contrast_temperature: float = bounded(0.1, gt=0)
    """temperature of --slot-contrast"""
    seed: int = bounded(0, min=0)
    """seed of weights, batches and collection"""
    device: str = "auto"
    """auto | cpu | cuda"""
    resume: bool = False
    """continue from <out>/train_state.pt"""
    overwrite: bool = False
    """replace the run already in --out (without it or --resume, an --out holding a run is refused)"""
    checkpoint_every: int = bounded(250, min=1)
    """steps between atomic training checkpoints (train_state.pt and psb.ckpt)"""
    eval_every: int = bounded(250, min=0)
    """steps between evaluations on held-out episodes (0: only at the end)"""
    eval_clips: int = bounded(64, min=1)
    """held-out clips per evaluated length"""
    val_fraction: float = bounded(0.1, min=0, lt=1)
    """fraction of episodes held out for evaluation"""
    num_workers: int = bounded(0, min=0)
    """DataLoader worker processes"""
    amp: bool = True
    """bfloat16 autocast on CUDA (ignored on CPU)"""
    max_minutes: float | None = bounded(None, gt=0)
    """stop after this many minutes of training (still evaluates and saves); the learning-rate schedule then
    follows whichever of steps and time is further along (resume is exact only without this budget)"""
    progress: bool = True
    """show a progress bar"""
    num_gifs: int = bounded(2, min=0)
    """slot-mask GIFs of held-out clips written at the end"""
    image_size: tuple[int, ...] = bounded((_MODEL.image_size,), min=1)
    """model input resolution: N (N x N) or H W, any size (e.g. 84, or 80 64); frames of other sizes are resized.
    In Python an int also works"""
    decoder_grid: int = bounded(_MODEL.decoder_grid, min=1)
    """smallest side of the decoder's broadcast grid (see PSBConfig.decoder_grid)"""
    num_slots: int = bounded(_MODEL.num_slots, min=1)
    """slots per frame (objects + background)"""
    slot_dim: int = bounded(_MODEL.slot_dim, min=1)
    """slot width D"""
    num_blocks: int = bounded(_MODEL.num_blocks, min=1)
    """PSB blocks M"""
    num_heads: int = bounded(_MODEL.num_heads, min=1)
    """attention heads"""
    window: int | None = bounded(_MODEL.window, min=1)
    """bottom-up attention window W (none: unbounded)"""
    time_window: int | None = bounded(_MODEL.time_window, min=1)
    """time-axis attention window Wt (none: unbounded); offsets beyond --clip-len - 1 share its time bias"""
    encoder: Literal["psb", "savi"] = _MODEL.encoder
    """psb | savi"""
    slot_init: Literal["learned", "random"] = _MODEL.slot_init
    """learned | random"""
    encoder_channels: int = bounded(_MODEL.encoder_channels, min=1)
    """CNN frame-encoder channels"""
    feature_stride: int = bounded(_MODEL.feature_stride, min=1)
    """frame-encoder downsampling (tokens per frame = (image_size/stride)^2)"""
    decoder_channels: int = bounded(_MODEL.decoder_channels, min=1)
    """decoder channels"""
    inverted_attention: bool = _MODEL.inverted_attention
    """ablation: --no-inverted-attention uses a plain softmax over keys"""
    time_encoding: Literal["relative", "absolute"] = _MODEL.time_encoding
    """relative | absolute (ablation)"""
    colour_values: bool = _MODEL.colour_values
    """add each token's patch colour to the bottom-up values (binds colour; see PSBConfig.colour_values)"""
    decoder: str = _MODEL.decoder
    """broadcast | blob (one colour and one soft box per slot; see PSBConfig.decoder)"""
    background_slot: bool = _MODEL.background_slot
    """slot 0 draws a learned background image initialised to the training frames' median (see PSBConfig)"""
    difference_input: bool = _MODEL.difference_input
    """the frame encoder also sees frame minus the training frames' median (see PSBConfig)"""
    foreground_weight: float = bounded(1.0, gt=0)
    """weight of the pixel MSE on foreground pixels (those differing from the training frames' median by
    more than --foreground-threshold); 1 is the plain MSE"""
    foreground_reference: str = "median"
    """what foreground pixels differ from: median (the training frames' per-pixel median: what moves or
    changes between episodes) | colour (their most common colour: everything drawn over the floor,
    static objects included)"""
    foreground_threshold: float = bounded(0.1, min=0)
    """per-channel difference from the median above which a pixel is foreground"""
    background_alignment: float = bounded(0.0, min=0)
    """weight of the term pulling slot 0's mask onto the background and off the foreground (needs
    --background-slot; see psb_rl.background.background_alignment)"""
    component_alignment: float = bounded(0.0, min=0)
    """weight of the term matching slots to the one-colour connected regions of the foreground and pulling
    each matched slot's mask onto its region (see psb_rl.background.component_alignment)"""
    colour_alignment: float = bounded(0.0, min=0)
    """weight of the term pulling the colour each slot decodes onto the mean input colour of the pixels it
    owns (see psb_rl.background.colour_alignment)"""
    fixed_background: bool = False
    """slot 0's image stays the training frames' median instead of being learned (needs --background-slot):
    a learned image can paint where objects usually are (a paddle's column as a smear), which other slots
    then paint over with the floor's colour"""
    motion_alignment: float = bounded(0.0, min=0)
    """weight of the motion prior: pixels that changed since the previous frame and differ from the
    background reference are pulled off slot 0 onto the object slots (needs --background-slot; see
    psb_rl.background.motion_alignment)"""

    def model_config(self) -> PSBConfig:
        """The :class:`PSBConfig` described by the model fields."""
        from psb_rl.frames import size_from_flag

        names = {f.name for f in dataclasses.fields(PSBConfig)}
        fields = {k: v for k, v in dataclasses.asdict(self).items() if k in names}
        fields["image_size"] = size_from_flag(self.image_size, "--image-size")
        return PSBConfig(**fields, time_bias_max_offset=self.clip_len - 1)  # the offsets training teaches


@dataclass
class DistInfo:
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def setup_distributed(device: torch.device) -> DistInfo:
    """Join the torchrun process group when launched by torchrun (env ``WORLD_SIZE`` > 1)."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world <= 1:
        return DistInfo()
    if not dist.is_initialized():
        dist.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")
    return DistInfo(dist.get_rank(), dist.get_world_size(), int(os.environ.get("LOCAL_RANK", "0")))


class StepBatchSampler(Sampler[list[int]]):
    """Batches of dataset indices that depend only on ``(seed, step, rank)``: resumable exactly.

    :param candidates: indices this rank may draw from.
    :param batch_size: clips per batch. :param start_step: first step. :param steps: last step (excl.).
    """

    def __init__(self, candidates: np.ndarray, batch_size: int, seed: int, rank: int, start_step: int, steps: int):
        self.candidates, self.batch_size = candidates, batch_size
        self.seed, self.rank, self.start_step, self.steps = seed, rank, start_step, steps

    def __len__(self) -> int:
        return max(0, self.steps - self.start_step)

    def __iter__(self):
        for step in range(self.start_step, self.steps):
            rng = np.random.default_rng([self.seed, step, self.rank])
            yield self.candidates[rng.integers(0, len(self.candidates), self.batch_size)].tolist()


STILL_PIXEL_THRESHOLD = 0.1
"""A pixel whose colour changes by less than this (max over RGB, frames in [0, 1]) between two frames is
"still": its slot should not change there."""


def mask_change(masks: torch.Tensor, video: torch.Tensor | None = None) -> torch.Tensor:
    """Mean fraction of pixels that change slot between consecutive frames where the image stays still.

    ``½ Σ_n |m_{t+1} - m_t|`` per pixel, counted only where the input pixel did not change (with
    ``video``), averaged over pixels, steps and clips. Objects that move and keep their slot cost
    nothing (their pixels that change owner also change colour); two slots that swap objects pay for
    the objects' overlapping interiors; a static partition of the image is not favoured over tracking.

    :param masks: ``(B, T, N, H, W)`` alpha masks (sum to 1 over N).
    :param video: ``(B, T, 3, H, W)`` the input frames; None counts every pixel.
    :return: scalar tensor in [0, 1] (0 for single-frame clips).
    """
    if masks.shape[1] < 2:
        return masks.new_zeros(())
    change = (masks[:, 1:] - masks[:, :-1]).abs().sum(dim=2) / 2  # (B, T-1, H, W)
    if video is not None:
        still = (video[:, 1:] - video[:, :-1]).abs().amax(dim=2) < STILL_PIXEL_THRESHOLD
        change = change * still
    return change.mean()


def slot_contrast(slots: torch.Tensor, temperature: float) -> torch.Tensor:
    """InfoNCE between consecutive steps: slot n of clip b at t must pick slot n of clip b at t+1 out of
    all B·N slots at t+1 (cosine similarities over ``temperature``), averaged over steps.

    :param slots: ``(B, T, N, D)``.
    :param temperature: softmax temperature (> 0).
    :return: scalar tensor (0 for single-frame clips); ``log(B·N)`` for slots that carry no identity.
    """
    b, t, n, _ = slots.shape
    if t < 2:
        return slots.new_zeros(())
    unit = F.normalize(slots.float(), dim=-1).transpose(0, 1).flatten(1, 2)  # (T, B·N, D)
    logits = torch.bmm(unit[:-1], unit[1:].transpose(1, 2)) / temperature  # (T-1, B·N, B·N)
    target = torch.arange(b * n, device=slots.device).expand(t - 1, -1)
    return F.cross_entropy(logits.flatten(0, 1), target.flatten())


def temporal_weight(step: int, peak: float, args: TrainArgs) -> float:
    """Weight ``peak`` of a temporal term at ``step``: 0 before ``args.mask_consistency_start``, then a
    linear ramp reaching ``peak`` at twice that step."""
    start = args.mask_consistency_start
    if start <= 0:
        return peak
    return peak * min(1.0, max(0.0, (step - start) / start))


def mask_consistency_weight(step: int, args: TrainArgs) -> float:
    """Weight of the mask-consistency term at ``step`` (see :func:`temporal_weight`)."""
    return temporal_weight(step, args.mask_consistency, args)


def learning_rate(step: int, args: TrainArgs, time_fraction: float = 0.0) -> float:
    """Linear warm-up to ``args.lr`` then cosine decay to 10%.

    :param step: optimizer steps taken.
    :param time_fraction: elapsed fraction of ``args.max_minutes`` (0 without a time budget). The decay
        follows whichever of steps and time is further along, so a time-budgeted run (the quality
        benchmark) decays within its budget; the warm-up always counts steps.
    """
    if step < args.warmup_steps:
        return args.lr * (step + 1) / args.warmup_steps
    progress = max((step - args.warmup_steps) / max(1, args.steps - args.warmup_steps), time_fraction)
    return args.lr * (0.1 + 0.9 * 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress))))


def time_budget_used(elapsed: float, max_minutes: float, info: DistInfo, device: torch.device) -> tuple[float, bool]:
    """Fraction of the time budget used and whether it is spent, taken from rank 0 so that every rank
    uses the same learning rate and stops at the same step."""
    fraction = elapsed / (max_minutes * 60.0)
    if info.world_size > 1:
        shared = torch.tensor([fraction], dtype=torch.float64, device=device)
        dist.broadcast(shared, src=0)
        fraction = float(shared.item())
    return fraction, fraction > 1.0


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed)  # noqa: NPY002 - third-party code may use the global RNG
    torch.manual_seed(seed)


def save_train_state(path: Path, model: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                     args: TrainArgs, history: list[dict[str, float]], train_seconds: float = 0.0,
                     data: dict[str, Any] | None = None) -> None:
    """Atomically write everything needed to resume (loadable with ``torch.load(weights_only=True)``)."""
    state = {
        "step": step,
        "model": model.state_dict(),
        "optimizer": optimizer.state_dict(),
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "args": json.dumps(dataclasses.asdict(args)),
        "history": json.dumps(history),
        "train_seconds": float(train_seconds),
        "data": json.dumps(data or {}),
    }
    with atomic_path(path) as tmp:
        torch.save(state, tmp)


def ensure_data(args: TrainArgs, info: DistInfo) -> None:
    """Collect the dataset from ``args.env`` when ``args.data`` holds no rollouts (rank 0 only), with the
    collection settings of ``args`` (frame source, crop, resize, env kwargs, episodes and their cap)."""
    from psb_rl.cli import parse_env_kwargs
    from psb_rl.frames import size_from_flag
    from psb_rl.rollouts import collect_rollouts
    from psb_rl.shards import check_no_orphan_shards

    manifest = Path(args.data) / "manifest.json"
    if info.is_main and not manifest.exists():
        check_no_orphan_shards(args.data)  # shards whose manifest was lost: never collected over
        if args.collect_episodes <= 0:
            raise ValueError(
                f"no rollouts found at {args.data}: collect some with `python pretrain/collect_rollouts.py "
                f"--env {args.env} --out {args.data}` (psb_rl.collect_rollouts), or pass --collect-episodes N."
            )
        cap = f" of at most {args.collect_max_episode_steps} steps" if args.collect_max_episode_steps else ""
        print(f"no rollouts at {args.data}: collecting {args.collect_episodes} episodes{cap} of {args.env} ...")
        collect_rollouts(env_id=args.env, out=args.data, episodes=args.collect_episodes, seed=args.seed,
                         resume=True, progress=args.progress, gym_packages=args.gym_packages, pixels=args.pixels,
                         crop=tuple(args.crop), resize=size_from_flag(args.resize),
                         env_kwargs=parse_env_kwargs(args.env_kwargs) or None,
                         max_episode_steps=args.collect_max_episode_steps)
    if info.world_size > 1:
        dist.barrier()


def held_out_episodes(dataset: Any, limit: int = 64) -> list[dict[str, np.ndarray]]:
    """Up to ``limit`` whole held-out episodes as numpy arrays (frames and, when present, masks)."""
    episodes = []
    for index in range(min(limit, dataset.num_episodes)):
        episode = dataset.load_episode(index)
        episodes.append({key: np.asarray(episode[key]) for key in ("frames", "masks", "mask_categories")
                         if key in episode})
    return episodes


def uses_background_reference(args: TrainArgs) -> bool:
    """Whether the recipe needs the training frames' median: for the model (background slot, difference
    input) or for the loss terms of :func:`background_terms`."""
    return bool(args.background_slot or args.difference_input or args.foreground_weight != 1.0
                or args.component_alignment > 0 or args.colour_alignment > 0 or args.motion_alignment > 0)


def prepare_background(model: PSBAutoencoder, train_set: Any, args: TrainArgs,
                       device: torch.device) -> torch.Tensor | None:
    """The training frames' per-pixel median when a background option is on (written into the model's
    background image / reference), else None."""
    if args.background_alignment and not args.background_slot:
        raise ValueError("--background-alignment needs --background-slot (it acts on slot 0's mask)")
    if args.fixed_background and not args.background_slot:
        raise ValueError("--fixed-background needs --background-slot (it keeps slot 0's image fixed)")
    if args.motion_alignment and not args.background_slot:
        raise ValueError("--motion-alignment needs --background-slot (it pulls moving pixels off slot 0)")
    if args.foreground_weight <= 0 or args.background_alignment < 0 or args.colour_alignment < 0:
        raise ValueError("--foreground-weight must be > 0, --background-alignment and --colour-alignment >= 0")
    if not uses_background_reference(args):
        return None
    from psb_rl.background import dominant_colour_background, median_background

    if args.foreground_reference not in ("median", "colour"):
        raise ValueError(f"--foreground-reference must be median or colour, got {args.foreground_reference!r}")
    median = median_background(train_set, model.config.image_size, seed=args.seed).to(device)
    model.set_background(median)
    return median if args.foreground_reference == "median" else dominant_colour_background(median)


def background_terms(output: Any, video: torch.Tensor, reference: torch.Tensor,
                     args: TrainArgs) -> tuple[torch.Tensor, dict[str, float]]:
    """The reconstruction loss with foreground weighting and background alignment, and their logged values."""
    from psb_rl.background import background_alignment, foreground_mask, foreground_weighted_mse

    foreground = foreground_mask(video, reference, args.foreground_threshold)
    loss = output.loss
    if args.foreground_weight != 1.0:
        loss = foreground_weighted_mse(output.recon, video, foreground, args.foreground_weight)
    logged = {"foreground_fraction": float(foreground.float().mean())}
    if args.background_alignment:
        alignment = background_alignment(output.masks, foreground)
        loss = loss + args.background_alignment * alignment
        logged["background_alignment"] = float(alignment.item())
    if args.component_alignment:
        from psb_rl.background import colour_components, component_alignment

        first = 1 if args.background_slot else 0
        regions = colour_components(video, foreground, output.masks.shape[2] - first)
        matched = component_alignment(output.masks, regions, first)
        loss = loss + args.component_alignment * matched
        logged["component_alignment"] = float(matched.item())
    if args.colour_alignment:
        from psb_rl.background import colour_alignment

        colour = colour_alignment(output.masks, output.per_slot_rgb, video, 1 if args.background_slot else 0)
        loss = loss + args.colour_alignment * colour
        logged["colour_alignment"] = float(colour.item())
    if args.motion_alignment:
        from psb_rl.background import motion_alignment, motion_mask

        motion = motion_alignment(output.masks, motion_mask(video, reference, args.foreground_threshold))
        loss = loss + args.motion_alignment * motion
        logged["motion_alignment"] = float(motion.item())
    return loss, logged


def train(args: TrainArgs) -> dict[str, Any]:
    """Train (or resume) a PSB autoencoder, evaluate it and write the run directory.

    The directory is owned while the run writes (``<out>/.lock``); one that holds a run already is
    refused unless ``resume`` continues it or ``overwrite`` replaces it.

    :return: a summary with the final metrics and the paths written.
    :raises TrainingDivergedError: on a NaN/inf loss (nothing is overwritten with bad weights).
    :raises psb_rl.utils.RunDirError: the directory is in use, holds a run, cannot be written, or
        ``resume`` asks for other settings or other data than the run's.
    """
    validate_args(args)
    if int(os.environ.get("RANK", "0")) != 0:  # torchrun: rank 0 owns the directory
        ensure_writable_dir(args.out, "--out")
        return _train(args)
    with owned_run_dir(args.out, RUN_FILES, resume=args.resume, overwrite=args.overwrite):
        return _train(args)


def validate_args(args: TrainArgs) -> None:
    """Reject values no run can use, before anything is written.

    :raises ValueError: naming the option.
    """
    from psb_rl.cli import check_bounds

    check_bounds(args)  # the ranges of TrainArgs' fields, for arguments made in Python
    for name in ("mask_consistency", "slot_contrast"):
        if getattr(args, name) < 0:
            raise ValueError(f"--{name.replace('_', '-')} must be >= 0 (a weight), got {getattr(args, name)}")
    if args.contrast_temperature <= 0:
        raise ValueError(f"--contrast-temperature must be > 0, got {args.contrast_temperature}")


def resume_mismatches(args: TrainArgs, saved: dict[str, Any]) -> list[str]:
    """The settings of ``args`` a resumed run cannot change, where they differ from the run's ``saved`` args.

    :return: lines such as ``"--slot-dim 64 differs from the run's 128"``.
    """
    from psb_rl.frames import size_from_flag

    def comparable(name: str, value: Any) -> Any:  # JSON lists vs tuples; --image-size 32 vs (32,) vs 32
        return size_from_flag(value, "--image-size") if name == "image_size" else json.loads(json.dumps(value))

    names = [f.name for f in dataclasses.fields(PSBConfig) if hasattr(args, f.name)] + list(RESUME_FIXED)
    return [f"--{name.replace('_', '-')} {getattr(args, name)} differs from the run's {saved[name]}"
            for name in names if name in saved and comparable(name, saved[name]) != comparable(name, getattr(args, name))]


def check_resumable(args: TrainArgs, state: dict[str, Any], data: dict[str, Any], state_path: Path) -> None:
    """Refuse to resume ``state`` with other model settings or other rollouts than the run's.

    :raises RunDirError: naming the differing settings, or both datasets and their manifest digests.
    """
    differing = resume_mismatches(args, json.loads(state["args"]))
    if differing:
        raise RunDirError(f"cannot resume {state_path.parent}: {'; '.join(differing)}. Pass the run's settings, "
                          "or start over with --overwrite instead of --resume.")
    saved = json.loads(state.get("data", "{}"))
    if saved.get("manifest_sha256") and saved["manifest_sha256"] != data.get("manifest_sha256"):
        raise RunDirError(
            f"cannot resume {state_path.parent}: --data {data.get('path')} (manifest sha256 "
            f"{str(data.get('manifest_sha256'))[:12]}...) is not the data the run was trained on "
            f"({saved.get('path')}, sha256 {saved['manifest_sha256'][:12]}...). Pass that --data, or start "
            "over with --overwrite instead of --resume."
        )


@dataclass
class HeldOut:
    """The held-out episodes every evaluation reads (read once) and the names of their mask categories."""

    episodes: list[dict[str, np.ndarray]]
    category_names: list[str] | None = None


@dataclass
class TrainingLog:
    """Where rank 0 reports progress: the progress bar and the TensorBoard writer (None on other ranks)."""

    bar: Any
    writer: Any = None


def _setup_device(args: TrainArgs) -> tuple[torch.device, DistInfo]:
    """The device and the torchrun process group of this rank.

    :raises ValueError: when ``--batch-size`` does not split over the ranks.
    """
    device = resolve_device(args.device)
    info = setup_distributed(device)
    if info.world_size > 1 and device.type == "cuda":
        device = torch.device("cuda", info.local_rank)
        torch.cuda.set_device(device)
    if args.batch_size % info.world_size:
        raise ValueError(f"--batch-size {args.batch_size} must be divisible by the {info.world_size} ranks")
    return device, info


def _damaged_state(path: Path, reason: str) -> RunDirError:
    return RunDirError(
        f"cannot resume {path.parent}: {path} is damaged or not a training state written by train_psb.py "
        f"({reason}); restore it from a copy, or start over with --overwrite instead of --resume"
    )


STATE_KEYS = ("step", "model", "optimizer", "torch_rng", "cuda_rng", "args", "history")
"""What a ``train_state.pt`` holds (see :func:`save_train_state`)."""


def load_train_state(path: Path) -> dict[str, Any]:
    """Read a ``train_state.pt`` with ``torch.load(weights_only=True)`` (tensors and plain values only).

    :raises RunDirError: in one line, for a truncated, corrupted or foreign file (never a traceback, and
        never the advice to load it with ``weights_only=False``, which would run the code a pickle holds).
    """
    import pickle
    import warnings
    import zipfile

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            state = torch.load(path, map_location="cpu", weights_only=True)
    except (pickle.UnpicklingError, RuntimeError, EOFError, ValueError, zipfile.BadZipFile, OSError, KeyError,
            AttributeError, TypeError, IndexError) as err:
        kind = "it holds objects other than tensors" if isinstance(err, pickle.UnpicklingError) else type(err).__name__
        raise _damaged_state(path, kind) from None
    if not isinstance(state, dict) or any(key not in state for key in STATE_KEYS):
        raise _damaged_state(path, "its entries are not those of a training state")
    if not all(isinstance(state[key], str) for key in ("args", "history")):
        raise _damaged_state(path, "its args and history are not JSON text")
    try:
        saved_args, history, data = (json.loads(state["args"]), json.loads(state["history"]),
                                     json.loads(state.get("data", "{}")))
    except (TypeError, ValueError):
        raise _damaged_state(path, "its args or history are not valid JSON") from None
    if not (isinstance(saved_args, dict) and isinstance(history, list) and isinstance(data, dict)):
        raise _damaged_state(path, "its args, history or data record are not what train_psb.py writes")
    columns = ("step", "loss", "mse", "mask_change", "grad_norm", "lr")  # what every step_record holds
    if not all(isinstance(row, dict) and all(isinstance(row.get(key), int | float) for key in columns)
               for row in history):
        raise _damaged_state(path, "its history rows are not those of train_psb.py")
    return state


def resume_training(args: TrainArgs, model: PSBAutoencoder, optimizer: torch.optim.Optimizer, state_path: Path,
                    data_record: dict[str, Any], info: DistInfo) -> tuple[int, list[dict[str, float]], float]:
    """Load ``state_path`` into ``model``, ``optimizer`` and the RNGs when ``args.resume`` asks for it.

    :return: ``(start step, history, training seconds before the resume)``; ``(0, [], 0.0)`` for a fresh run.
    :raises RunDirError: when the saved run has other settings or other data (:func:`check_resumable`).
    """
    if not args.resume:
        return 0, [], 0.0
    if not state_path.exists():
        if info.is_main:
            print(f"--resume: no {state_path} yet, starting from scratch")
        return 0, [], 0.0
    # Loaded onto the CPU: RNG states must be CPU byte tensors (CUDA's too), and the model and the
    # optimizer copy their tensors to the parameters' device themselves.
    state = load_train_state(state_path)
    check_resumable(args, state, data_record, state_path)
    try:
        previous_seconds = float(state.get("train_seconds", 0.0))
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        torch.set_rng_state(state["torch_rng"])
        if state["cuda_rng"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(state["cuda_rng"])
        start_step, history = int(state["step"]), json.loads(state["history"])
    except (KeyError, TypeError, ValueError, RuntimeError) as err:  # the right keys, the wrong tensors
        raise _damaged_state(state_path, f"{type(err).__name__}: {' '.join(str(err).split())[:160]}") from None
    if info.is_main:
        print(f"resuming from step {start_step} ({state_path})")
    return start_step, history, previous_seconds


def extra_training_data(args: TrainArgs, manifest: dict[str, Any]) -> list[Any]:
    """The training clips of every ``--extra-data`` directory (all their episodes).

    :param manifest: the manifest of ``--data``: frames of every extra directory must have its shape and frame
        pipeline, so that the model is trained on one kind of frame.
    :raises ValueError: naming the directory whose frames differ.
    """
    from psb_rl.data import RolloutDataset

    sets = []
    for path in args.extra_data:
        extra = RolloutDataset(path, clip_len=args.clip_len, split="all")
        for key in ("frame_shape", "frame_pipeline"):
            if extra.manifest.get(key) != manifest.get(key):
                raise ValueError(f"--extra-data {path}: its {key} {extra.manifest.get(key)} differs from --data "
                                 f"{args.data}'s {manifest.get(key)}; collect it with the same frame pipeline")
        sets.append(extra)
    return sets


def step_loader(train_set: Any, args: TrainArgs, info: DistInfo, start_step: int, device: torch.device) -> DataLoader:
    """Batches of steps ``start_step .. args.steps``, a pure function of ``(seed, step, rank)``.

    Each rank draws from its own contiguous part of the training clips.
    """
    parts = np.array_split(np.arange(len(train_set)), info.world_size)
    sampler = StepBatchSampler(parts[info.rank], args.batch_size // info.world_size, args.seed, info.rank,
                               start_step, args.steps)
    return DataLoader(train_set, batch_sampler=sampler, num_workers=args.num_workers,
                      persistent_workers=False, pin_memory=device.type == "cuda")


def training_loss(output: Any, video: torch.Tensor, step: int, args: TrainArgs,
                  reference: torch.Tensor | None = None) -> tuple[torch.Tensor, dict[str, Any]]:
    """The loss of one step and its terms to log.

    The pixel MSE of the reconstruction (weighted toward the foreground and joined by the background
    terms of :func:`background_terms` when a background ``reference`` is given), plus (ramped in by
    :func:`temporal_weight`) the mask-consistency term (:func:`mask_change`, logged even when its weight
    is 0) and the slot-contrast term (:func:`slot_contrast`, when ``args.slot_contrast`` is on).

    :param output: the model's output on ``video`` (``loss``, ``masks``, ``slots``).
    :param video: ``(B, T, 3, H, W)`` the input clips.
    :param step: optimizer steps taken.
    :param reference: the background reference of :func:`prepare_background`, or None.
    :return: ``(loss, terms)``: ``terms`` maps ``mse``, ``mask_change`` and each optional term's name to a
        scalar tensor or float (the step record's columns, in that order).
    """
    weight = mask_consistency_weight(step, args)
    with torch.set_grad_enabled(weight > 0):  # logged either way: how much the slots reshuffle
        change = mask_change(output.masks, video)
    loss, background_logged = output.loss, {}
    if reference is not None:
        loss, background_logged = background_terms(output, video, reference, args)
    loss = loss + weight * change if weight > 0 else loss
    terms: dict[str, Any] = {"mse": output.loss, "mask_change": change}
    if args.slot_contrast:
        contrast = slot_contrast(output.slots, args.contrast_temperature)
        loss = loss + temporal_weight(step, args.slot_contrast, args) * contrast
        terms["slot_contrast"] = contrast
    terms.update(background_logged)
    return loss, terms


def step_record(step: int, loss: torch.Tensor, terms: dict[str, Any], grad_norm: torch.Tensor,
                lr: float) -> dict[str, float]:
    """One entry of the run's history: step, loss, the loss terms, gradient norm and learning rate."""
    logged = {key: float(value.item() if isinstance(value, torch.Tensor) else value) for key, value in terms.items()}
    record = {"step": step, "loss": float(loss.item()), "mse": logged.pop("mse"),
              "mask_change": logged.pop("mask_change"), "grad_norm": float(grad_norm), "lr": lr}
    record.update(logged)  # the optional terms, after the columns every run has
    return record


def log_step(log: TrainingLog, record: dict[str, float], frames_per_second: float, health: dict[str, str]) -> None:
    """Show ``record`` in the progress bar (with the last evaluation's health) and write it to TensorBoard."""
    log.bar.update(1)
    log.bar.set_postfix(loss=f"{record['loss']:.5f}", fps=f"{frames_per_second:.0f}", **health)
    for key, value in record.items():
        if key != "step":
            log.writer.add_scalar(f"train/{key}", value, record["step"])


def evaluate_during_training(model: PSBAutoencoder, held_out: HeldOut, args: TrainArgs, step: int,
                             log: TrainingLog, health: dict[str, str]) -> dict[str, str]:
    """Evaluate at clip length 1× on the held-out episodes, log the metrics and print one line.

    :param health: the progress bar's health fields so far.
    :return: the progress bar's health fields after this evaluation.
    """
    results = evaluate_episodes(model, held_out.episodes, args.clip_len, (1,), args.eval_clips,
                                category_names=held_out.category_names)
    for key, value in scalar_metrics(results.get("1x", {})).items():
        log.writer.add_scalar(f"eval/{key}", value, step)
    health = health_postfix(results["1x"]["health"]) if "1x" in results else health
    line = ", ".join(f"{k}={v:.4f}" for k, v in results["1x"].items() if isinstance(v, float))
    if "1x" in results:
        line += ", " + health_fields(results["1x"]["health"])
    log.bar.write(f"step {step}: {line}")
    sys.stdout.flush()
    return health


def save_progress(out: Path, model: PSBAutoencoder, optimizer: torch.optim.Optimizer, step: int, args: TrainArgs,
                  history: list[dict[str, float]], train_seconds: float, data_record: dict[str, Any],
                  env_id: str | None) -> None:
    """Checkpoint the run: ``train_state.pt`` (to resume) and ``psb.ckpt`` (the model), both atomically."""
    save_train_state(out / TRAIN_STATE_NAME, model, optimizer, step, args, history, train_seconds, data_record)
    save_checkpoint(model, out / "psb.ckpt", extra={"step": step, "data": data_record, "env_id": env_id})


def _distributed(model: PSBAutoencoder, info: DistInfo, device: torch.device) -> torch.nn.Module:
    """``model`` wrapped in DistributedDataParallel under torchrun, else ``model`` itself."""
    if info.world_size > 1:
        return torch.nn.parallel.DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)
    return model


def _training_log(args: TrainArgs, out: Path, start_step: int, info: DistInfo) -> TrainingLog:
    """The TensorBoard writer (rank 0) and the progress bar (shown on rank 0 with ``args.progress``)."""
    from tqdm import tqdm

    writer = None
    if info.is_main:
        from torch.utils.tensorboard import SummaryWriter

        # a resumed run replays the steps after its last checkpoint: TensorBoard drops those logged before
        writer = SummaryWriter(str(out / "tensorboard"), purge_step=start_step + 1 if start_step else None)
    bar = tqdm(total=args.steps, initial=start_step, disable=not (args.progress and info.is_main),
               dynamic_ncols=True, desc="train")
    return TrainingLog(bar, writer)


def _finish(model: PSBAutoencoder, held_out: HeldOut, args: TrainArgs, step: int, history: list[dict[str, float]],
            train_seconds: float, log: TrainingLog, info: DistInfo) -> dict[str, Any]:
    """After the last step: the final evaluation and the run's files (rank 0), then leave the process group.

    :return: the summary :func:`train` returns.
    """
    if info.world_size > 1:
        dist.barrier()
    summary: dict[str, Any] = {"steps": step, "world_size": info.world_size, "train_seconds": train_seconds}
    if info.is_main:
        summary.update(finish_run(model, held_out.episodes, args, Path(args.out), history, train_seconds,
                                  log.writer, held_out.category_names))
        log.writer.close()
    if info.world_size > 1:
        dist.barrier()
        dist.destroy_process_group()
    return summary


def _train(args: TrainArgs) -> dict[str, Any]:
    """:func:`train` once the run directory is owned."""
    from psb_rl.data import RolloutDataset
    from psb_rl.shards import manifest_record

    # device, data and the held-out episodes
    set_torch_threads(args.torch_threads)
    device, info = _setup_device(args)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    ensure_data(args, info)
    data_record = manifest_record(args.data)
    config = args.model_config()
    train_set = RolloutDataset(args.data, clip_len=args.clip_len, split="train", val_fraction=args.val_fraction)
    extra_sets = extra_training_data(args, train_set.manifest)
    if extra_sets:
        data_record = {**data_record, "extra": [manifest_record(path) for path in args.extra_data]}
    val_set = RolloutDataset(args.data, clip_len=args.clip_len, split="val", val_fraction=args.val_fraction,
                             verify=False)
    held_out = HeldOut(held_out_episodes(val_set) if info.is_main else [],  # read once, reused by every evaluation
                       val_set.manifest.get("mask_categories"))
    env_id = train_set.manifest.get("env_id")

    # model and optimizer, then the saved state when resuming
    seed_everything(args.seed)
    model = PSBAutoencoder(config).to(device)
    model.frame_pipeline = pipeline_of_manifest(train_set.manifest)  # saved with every checkpoint
    reference = prepare_background(model, train_set, args, device)
    if args.fixed_background:  # the median written by prepare_background stays; AdamW skips gradient-free tensors
        model.decoder.background.requires_grad_(False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=args.lr, weight_decay=args.weight_decay)
    start_step, history, previous_seconds = resume_training(args, model, optimizer, out / TRAIN_STATE_NAME,
                                                            data_record, info)
    ddp_model = _distributed(model, info, device)
    loader = step_loader(ConcatDataset([train_set, *extra_sets]) if extra_sets else train_set, args, info,
                         start_step, device)

    log = _training_log(args, out, start_step, info)
    use_amp = args.amp and device.type == "cuda"
    started = time.perf_counter()
    frames_seen = 0
    step = start_step
    model.train()
    time_fraction, out_of_time = 0.0, False
    health: dict[str, str] = {}  # binding health of the last evaluation, shown in the progress bar
    # the step loop: loss, update, logging, checkpoints, periodic evaluation
    for batch in loader:
        lr = learning_rate(step, args, time_fraction)
        for group in optimizer.param_groups:
            group["lr"] = lr
        video = preprocess_frames(batch["frames"], config.image_size, device=device)
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=use_amp):
            output = ddp_model(video)
        loss, terms = training_loss(output, video, step, args, reference)
        if not torch.isfinite(loss):
            raise TrainingDivergedError(
                f"loss is {loss.item()} at step {step}; stopping. The last good checkpoint is kept at {out} "
                "(lower --lr or --grad-clip and --resume, or start from a clean --out)."
            )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), args.grad_clip)
        optimizer.step()
        step += 1
        frames_seen += video.shape[0] * video.shape[1] * info.world_size
        elapsed = time.perf_counter() - started
        history.append(step_record(step, loss, terms, grad_norm, lr))
        if info.is_main:
            log_step(log, history[-1], frames_seen / max(elapsed, 1e-9), health)
        if args.max_minutes is not None:
            time_fraction, out_of_time = time_budget_used(elapsed, args.max_minutes, info, device)
        last = step == args.steps or out_of_time
        if info.is_main and (step % args.checkpoint_every == 0 or last):
            save_progress(out, model, optimizer, step, args, history, previous_seconds + elapsed, data_record, env_id)
        if info.is_main and args.eval_every and step % args.eval_every == 0 and not last:
            health = evaluate_during_training(model, held_out, args, step, log, health)
        if out_of_time:
            break
    log.bar.close()

    train_seconds = previous_seconds + time.perf_counter() - started  # across resumes
    return _finish(model, held_out, args, step, history, train_seconds, log, info)


def finish_run(model: PSBAutoencoder, episodes: list[dict[str, np.ndarray]], args: TrainArgs, out: Path,
               history: list[dict[str, float]], train_seconds: float, writer: Any,
               category_names: list[str] | None = None) -> dict[str, Any]:
    """Final evaluation (1×/2×/4× clip length), GIFs, loss curve and metrics.json; warns when binding collapsed."""
    from psb_rl.visualize import save_curve_png, save_slot_gif

    evaluation = evaluate_episodes(model, episodes, args.clip_len, (1, 2, 4), args.eval_clips,
                                   category_names=category_names)
    for length, metrics in evaluation.items():
        for key, value in scalar_metrics(metrics).items():
            writer.add_scalar(f"final_{length}/{key}", value, len(history))
    warning = collapse_warning(evaluation["1x"]["health"]) if "1x" in evaluation else ""
    if warning:
        print(warning, file=sys.stderr)
    gifs = []
    model.eval()
    with torch.no_grad():
        for index, episode in enumerate(episodes[: args.num_gifs]):
            clip = preprocess_frames(episode["frames"][: 4 * args.clip_len][None], model.config.image_size,
                                     device=next(model.parameters()).device)
            result = model(clip)
            path = out / f"slots_{index}.gif"
            save_slot_gif(path, clip[0].cpu(), result.recon[0].cpu(), result.masks[0].cpu(), result.per_slot_rgb[0].cpu())
            gifs.append(str(path))
    curve = out / "loss_curve.png"
    if history:
        curves = {"train loss": [h["loss"] for h in history]}
        if args.mask_consistency or args.slot_contrast:
            curves["pixel MSE"] = [h.get("mse", h["loss"]) for h in history]
        save_curve_png(curve, [h["step"] for h in history], curves,
                       title="PSB pretraining", xlabel="step", ylabel="loss", logy=True)
    metrics = {
        "evaluation": evaluation,
        "train_seconds": train_seconds,
        "steps": history[-1]["step"] if history else 0,
        "final_loss": history[-1]["loss"] if history else None,
        "loss_curve": [[h["step"], h["loss"]] for h in history[:: max(1, len(history) // 500)]],
        "args": dataclasses.asdict(args),
        "config": model.config.to_dict(),
    }
    write_json(out / "metrics.json", metrics)
    return {
        "evaluation": evaluation,
        "checkpoint": str(out / "psb.ckpt"),
        "metrics": str(out / "metrics.json"),
        "gifs": gifs,
        "loss_curve": str(curve),
        "tensorboard": str(out / "tensorboard"),
    }


__all__ = ["TrainArgs", "TrainingDivergedError", "train"]

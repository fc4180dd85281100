"""Do slots bind objects on real frames? Each preset pretrains at its stated budget, then is scored on
held-out episodes with the binding health report and ground-truth object recall, beside two controls:
the same model at random initialisation, and a model pretrained on another preset's environment.

Rows go to benchmarks/results/real_env_binding.json as ``{env, preset, seed, budget_minutes, steps,
object_recall: {category: value}, fg_ari, health, colour_correlation, controls: {random_init: {...},
other_env: {...}}}``; the training-step cost of each preset beside the 32-px default recipe goes to
real_env_binding_step_cost.json.
Presets train one after another; to use two cores, run two ``--train-only`` processes with different
``--presets`` and then one process over all presets, which reuses the trained runs.

    python benchmarks/real_env_binding.py                                   # every preset, its own budget
    python benchmarks/real_env_binding.py --presets atari --seeds 0 1 2 --train-only
    python benchmarks/real_env_binding.py --minutes 0.1 --episodes 4        # a smoke test of the script
"""

from __future__ import annotations

import dataclasses
import json
import platform
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from psb_rl.cli import parse_dataclass, run_main
from psb_rl.presets import PRESETS, Preset, apply_preset
from psb_rl.utils import write_json

OTHER_ENV = {"builtin": "minigrid", "minigrid": "builtin", "atari": "minigrid"}
"""The preset whose model is the cross-environment control of each preset."""


@dataclass
class BindingArgs:
    presets: list[str] = field(default_factory=lambda: ["builtin", "minigrid", "atari"])
    """presets to pretrain and score (builtin, minigrid, atari)"""
    seeds: list[int] = field(default_factory=lambda: [0])
    """training seeds per preset"""
    minutes: float | None = None
    """training budget per run (default: each preset's own, max_minutes)"""
    steps: int = 100_000
    """step cap (the time budget normally ends training first)"""
    episodes: int | None = None
    """episodes collected per preset (default: each preset's own)"""
    max_episode_steps: int | None = None
    """episode cap during collection (default: each preset's own)"""
    data: str = "data/binding"
    """rollouts: <data>/<preset> (collected when missing)"""
    out: str = "runs/binding"
    """run directories: <out>/<preset>_s<seed> (reused when they hold a finished run)"""
    eval_clips: int = 64
    """held-out clips scored per model"""
    step_reps: int = 5
    """training steps timed per recipe for the step-cost comparison (0: skip it)"""
    train_only: bool = False
    """pretrain (and collect) only; score later with a run over all presets"""
    results: str = "benchmarks/results/real_env_binding.json"
    """JSON written with every row"""
    torch_threads: int = 1
    """torch threads"""


def collect(preset_name: str, preset: Preset, args: BindingArgs) -> Path:
    """The preset's rollouts (collected once, with ground-truth masks wherever the env has them)."""
    from psb_rl.rollouts import collect_rollouts

    root = Path(args.data) / preset_name
    if not (root / "manifest.json").exists():
        print(f"[{preset_name}] collecting {preset.env} ...", flush=True)
        collect_rollouts(
            env_id=preset.env, out=root, episodes=args.episodes or preset.collect_episodes, seed=0,
            pixels="render" if preset.source == "render" else "obs", resize=preset.resize,
            env_kwargs=preset.env_kwargs, max_episode_steps=args.max_episode_steps or preset.max_episode_steps,
            progress=False, **({"crop": preset.crop} if any(preset.crop) else {}),
        )
    return root


def pretrain(preset_name: str, preset: Preset, data: Path, seed: int, args: BindingArgs) -> Path:
    """Train the preset's recipe on ``data`` (or reuse a finished run); returns the run directory."""
    from psb_rl.training import TrainArgs, train

    run = Path(args.out) / f"{preset_name}_s{seed}"
    if (run / "metrics.json").exists():
        return run
    train_args = apply_preset(TrainArgs(), preset)
    train_args = dataclasses.replace(
        train_args, data=str(data), out=str(run), seed=seed, steps=args.steps,
        max_minutes=args.minutes if args.minutes is not None else preset.max_minutes,
        eval_every=0, progress=False, num_gifs=1, eval_clips=16,
    )
    print(f"[{preset_name} s{seed}] pretraining for {train_args.max_minutes} min ...", flush=True)
    train(train_args)
    return run


def score(model: torch.nn.Module, data: Path, args: BindingArgs) -> dict[str, Any]:
    """Health, object recall and FG-ARI of ``model`` on the held-out episodes of ``data``."""
    from psb_rl.data import RolloutDataset
    from psb_rl.evaluation import evaluate_episodes
    from psb_rl.training import held_out_episodes

    val = RolloutDataset(data, clip_len=1, split="val", verify=False)
    names = val.manifest.get("mask_categories")
    clip_len = 4
    with torch.no_grad():
        result = evaluate_episodes(model.eval(), held_out_episodes(val), clip_len, (1,), args.eval_clips,
                                   category_names=names)["1x"]
    return {"object_recall": result.get("object_recall"), "fg_ari": result.get("fg_ari"),
            "health": result.get("health")}


def colour_correlation(model: torch.nn.Module, data: Path, clips: int, clip_len: int = 4) -> float | None:
    """Does the model decode objects in their colours? For every ground-truth object of every frame of
    held-out clips: its mean input colour, and the mean over its pixels of the RGB decoded by the slot whose
    argmax covers most of them; the Pearson correlation of the two over objects and channels (None without
    masks). A model that decodes every object in one grey scores near 0.
    """
    from psb_rl.data import RolloutDataset
    from psb_rl.evaluation import sample_eval_clips
    from psb_rl.preprocessing import preprocess_frames
    from psb_rl.sizes import resize_masks
    from psb_rl.training import held_out_episodes

    val = RolloutDataset(data, clip_len=1, split="val", verify=False)
    frames, masks = sample_eval_clips(held_out_episodes(val), clip_len, clips)
    if masks is None:
        return None
    size = model.config.image_hw
    inputs, decoded = [], []
    with torch.no_grad():
        for frame_clip, mask_clip in zip(frames, masks):
            video = preprocess_frames(frame_clip[None], size)
            out = model.eval()(video)
            labels = torch.from_numpy(resize_masks(mask_clip, size).astype("int64"))
            owner = out.masks[0].argmax(dim=1)  # (T, H, W)
            for t in range(labels.shape[0]):
                for label in labels[t].unique():
                    if label <= 0:
                        continue
                    inside = labels[t] == label
                    slot = int(owner[t][inside].mode().values)
                    inputs.append(video[0, t][:, inside].mean(dim=1))
                    decoded.append(out.per_slot_rgb[0, t, slot][:, inside].mean(dim=1))
    if len(inputs) < 2:
        return None
    pair = torch.stack([torch.stack(inputs).flatten(), torch.stack(decoded).flatten()])
    return float(torch.corrcoef(pair)[0, 1])


def untrained(run: Path, data: Path) -> torch.nn.Module:
    """The run's model at its random initialisation (same config and seed; background set from the data
    median as at the first training step, which is not learned)."""
    from psb_rl.background import median_background
    from psb_rl.checkpoint import load_checkpoint
    from psb_rl.data import RolloutDataset
    from psb_rl.model import PSBAutoencoder
    from psb_rl.training import seed_everything

    trained = load_checkpoint(run / "psb.ckpt")
    metrics = json.loads((run / "metrics.json").read_text())
    seed_everything(int(metrics["args"]["seed"]))
    model = PSBAutoencoder(trained.config)
    model.frame_pipeline = getattr(trained, "frame_pipeline", None)
    if trained.config.background_slot or trained.config.difference_input:
        train_set = RolloutDataset(data, clip_len=4, split="train", verify=False)
        model.set_background(median_background(train_set, trained.config.image_size))
    return model


def step_seconds(train_args: Any, reps: int) -> list[float]:
    """Wall-clock seconds of ``reps`` training steps (forward, the recipe's loss terms, backward, AdamW) of
    ``train_args``'s model on a random batch of its size (a static background plus moving noise)."""
    from psb_rl.model import PSBAutoencoder
    from psb_rl.training import background_terms, uses_background_reference

    config = train_args.model_config()
    model = PSBAutoencoder(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    height, width = config.image_hw
    video = torch.rand(1, 1, 3, height, width).expand(train_args.batch_size, train_args.clip_len, 3, height, width).clone()
    video[..., : height // 8, : width // 8] = torch.rand(train_args.batch_size, train_args.clip_len, 3, height // 8,
                                                         width // 8)
    reference = video[0, 0].clone()
    if config.background_slot or config.difference_input:
        model.set_background(reference)
    wanted = uses_background_reference(train_args)
    times = []
    for _ in range(reps + 1):  # the first step warms up
        started = time.perf_counter()
        output = model(video)
        loss = background_terms(output, video, reference, train_args)[0] if wanted else output.loss
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return times[1:]


def step_cost(presets: list[str], reps: int) -> dict[str, Any]:
    """Training-step seconds of each preset beside the 32-px default recipe, measured alternately in one
    process so both see the same machine load."""
    from psb_rl.training import TrainArgs

    recipes = {"default": TrainArgs(), **{name: apply_preset(TrainArgs(), PRESETS[name]) for name in presets}}
    times: dict[str, list[float]] = {name: [] for name in recipes}
    for _ in range(reps):
        for name, recipe in recipes.items():
            times[name] += step_seconds(recipe, 1)
    result = {}
    for name, recipe in recipes.items():
        median = float(np.median(times[name]))
        frames = recipe.batch_size * recipe.clip_len
        result[name] = {"step_seconds": median, "frames_per_step": frames, "ms_per_frame": 1000 * median / frames,
                        "step_vs_default": median / float(np.median(times["default"]))}
    return result


def run(argv: list[str] | None = None) -> int:
    """The benchmark (see the module docstring); :func:`main` adds the CLI's error handling."""
    args = parse_dataclass(BindingArgs, argv, description=__doc__)
    torch.set_num_threads(args.torch_threads)
    unknown = sorted(set(args.presets) - set(PRESETS))
    if unknown:
        raise ValueError(f"unknown presets {unknown}; choose from {sorted(PRESETS)}")
    data = {name: collect(name, PRESETS[name], args) for name in args.presets}
    runs = {(name, seed): pretrain(name, PRESETS[name], data[name], seed, args)
            for name in args.presets for seed in args.seeds}
    if args.train_only:
        return 0
    from psb_rl.checkpoint import load_checkpoint

    rows = []
    for (name, seed), run in runs.items():
        preset = PRESETS[name]
        metrics = json.loads((run / "metrics.json").read_text())
        row = {"env": preset.env, "preset": name, "seed": seed, "budget_minutes": metrics["args"]["max_minutes"],
               "steps": metrics["steps"], "train_seconds": metrics["train_seconds"]}
        model = load_checkpoint(run / "psb.ckpt")
        row.update(score(model, data[name], args))
        row["colour_correlation"] = colour_correlation(model, data[name], args.eval_clips)
        controls = {"random_init": score(untrained(run, data[name]), data[name], args)}
        other = runs.get((OTHER_ENV[name], seed), Path(args.out) / f"{OTHER_ENV[name]}_s{seed}")
        if (other / "psb.ckpt").exists():
            controls["other_env"] = {"preset": OTHER_ENV[name], **score(load_checkpoint(other / "psb.ckpt"),
                                                                         data[name], args)}
        row["controls"] = controls
        rows.append(row)
    cost = step_cost(args.presets, args.step_reps) if args.step_reps > 0 else {}
    write_json(args.results, rows)
    if cost:
        write_json(Path(args.results).with_name(Path(args.results).stem + "_step_cost.json"), cost)
    print_table(rows)
    for name, entry in cost.items():
        print(f"step cost {name:<9} {entry['step_seconds']:.2f} s/step ({entry['frames_per_step']} frames, "
              f"{entry['ms_per_frame']:.1f} ms/frame) = {entry['step_vs_default']:.2f}x the 32-px default step")
    print(f"\nwrote {args.results} ({platform.processor() or platform.machine()}, torch {torch.__version__})")
    return 0


def _recall_text(result: dict[str, Any] | None) -> str:
    if not result or not result.get("object_recall"):
        return "n/a"
    return " ".join(f"{k}={v:.2f}" for k, v in result["object_recall"].items())


def print_table(rows: list[dict[str, Any]]) -> None:
    """One line per run and model: recall per category, FG-ARI, slots in use, collapsed."""
    print(f"\n{'preset':<9}{'seed':>5}{'steps':>7}  {'model':<12}{'fg_ari':>7}{'slots':>6}{'coll.':>6}  recall")
    for row in rows:
        entries = [("trained", row)] + [(k, v) for k, v in row["controls"].items()]
        for label, result in entries:
            health = result.get("health") or {}
            fg = result.get("fg_ari")
            print(f"{row['preset']:<9}{row['seed']:>5}{row['steps']:>7}  {label:<12}"
                  f"{(f'{fg:.3f}' if fg is not None else 'n/a'):>7}{health.get('slots_in_use', float('nan')):>6.1f}"
                  f"{health.get('collapsed', 'n/a')!s:>6}  {_recall_text(result)}")


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes become one ``error:`` line and exit code 2."""
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())

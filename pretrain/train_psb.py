"""Pretrain PSB on rollouts of an environment.

With no arguments: collects ``PSB/RandomObjects-v0`` rollouts into data/random_objects (if missing),
trains the CPU-sized default, evaluates on held-out episodes and writes runs/psb/.

    python pretrain/train_psb.py                                # the default run
    python pretrain/train_psb.py --data DIR --out DIR --steps 2000 --window 8
    python pretrain/train_psb.py --out runs/psb --resume        # continue an interrupted run
    python pretrain/train_psb.py --out runs/psb --overwrite     # replace the run in runs/psb
    python pretrain/train_psb.py --data data/pong --image-size 80 64 --torch-threads 2   # non-square frames
    python pretrain/train_psb.py --preset minigrid              # a recipe per env kind: collects, then trains
    python pretrain/train_psb.py --preset minigrid --env MiniGrid-Unlock-v0   # 48 x 88 frames, a token per cell
    python pretrain/train_psb.py --preset atari --env ALE/Boxing-v5 --crop 0 0 0 0 --resize 64
    torchrun --nproc_per_node=2 pretrain/train_psb.py ...       # DistributedDataParallel

A preset (``psb_rl.presets``) sets the env, the model, the loss, the time budget and how the rollouts are
collected when ``--data`` holds none (frame source, crop, size, env kwargs, episodes and their cap); ``--data``
and ``--out`` then default to ``data/<env>`` and ``runs/<env>``. Flags given explicitly override it.
"""

from __future__ import annotations

import json
import sys

from psb_rl.cli import parse_dataclass, run_main
from psb_rl.training import TrainArgs, TrainingDivergedError, train


def next_step_hint(args: TrainArgs, checkpoint: str) -> str:
    """The command that trains an agent on the slots of this run, on the environment pretrained on."""
    from psb_rl.shards import load_manifest

    try:
        env_id = load_manifest(args.data).get("env_id", args.env)
    except ValueError:
        env_id = args.env
    packages = "".join(f" --gym-packages {p}" for p in args.gym_packages)
    if env_id == "PSB/RandomObjects-v0":  # no task of its own: its objects are those of PSB/OddOneOut-v0
        return ("next: python agents/train_ppo.py --env PSB/OddOneOut-v0 --encoder slots "
                f"--checkpoint {checkpoint}   (the task with the objects of {env_id})")
    return f"next: python agents/train_ppo.py --env {env_id}{packages} --encoder slots --checkpoint {checkpoint}"


def main(argv: list[str] | None = None) -> int:
    args = parse_dataclass(TrainArgs, argv, description=__doc__)
    if args.preset is not None:
        from psb_rl.presets import apply_preset, explicit_flags, fit_to_env, get_preset

        preset, explicit = get_preset(args.preset), explicit_flags(sys.argv[1:] if argv is None else argv)
        args = fit_to_env(apply_preset(args, preset, explicit), preset, explicit)
        size = "x".join(str(v) for v in (args.resize * 2 if args.resize and len(args.resize) == 1 else args.resize or []))
        print(f"preset {args.preset} on {args.env}: frames {args.pixels} {size or 'as given'}, model "
              f"{args.image_size}, stride {args.feature_stride}, data {args.data}, run {args.out}")
    try:
        summary = train(args)
    except TrainingDivergedError as error:
        print(f"error: {error}", file=sys.stderr)
        return 1
    if "checkpoint" not in summary:  # non-zero torchrun ranks
        return 0
    print("\nevaluation on held-out episodes:")
    for length, metrics in summary["evaluation"].items():
        print(f"  {length:>3} ({metrics['clip_len']} frames): " + ", ".join(
            f"{key}={metrics[key]:.4f}" for key in ("fg_ari", "miou", "mbo", "mse", "psnr") if key in metrics))
    print("\nwrote:")
    for key in ("checkpoint", "metrics", "loss_curve", "tensorboard"):
        print(f"  {key:<12} {summary[key]}")
    for gif in summary["gifs"]:
        print(f"  {'gif':<12} {gif}")
    print("\n" + next_step_hint(args, summary["checkpoint"]))
    print(json.dumps({"fg_ari": summary["evaluation"].get("1x", {}).get("fg_ari")}), file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))

"""The main job on the built-in default: collect rollouts → pretrain PSB → PPO on object slots.

    make demo            # or: python pretrain/demo.py [--quick]

Every stage reuses what an earlier run left (rollouts, a finished checkpoint), so an interrupted demo
can simply be started again.
"""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class DemoArgs:
    out: str = "runs"
    """where the PSB run (runs/psb) and the PPO run (runs/ppo_slots) are written"""
    data: str = "data/random_objects"
    """rollout directory for pretraining (collected when missing)"""
    quick: bool = False
    """a few-minute smoke version: tiny pretraining and PPO budgets (not the quality recipe)"""
    ppo_steps: int = 50_000
    """PPO environment steps on PSB/OddOneOut-v0 with the pretrained slots"""
    device: str = "auto"
    """auto | cpu | cuda"""
    seed: int = 0
    """seed of every stage"""


def main(argv: list[str] | None = None) -> int:
    from agents import train_ppo
    from psb_rl.cli import parse_dataclass
    from psb_rl.training import TRAIN_STATE_NAME, TrainArgs, train

    args = parse_dataclass(DemoArgs, argv, description=__doc__)
    psb_out = Path(args.out) / "psb"
    train_args = TrainArgs(data=args.data, out=str(psb_out), device=args.device, seed=args.seed)
    ppo_steps = args.ppo_steps
    if args.quick:
        train_args = dataclasses.replace(train_args, data=args.data + "_quick", out=str(psb_out) + "_quick",
                                         collect_episodes=20, steps=60, eval_clips=8, warmup_steps=10)
        ppo_steps = min(ppo_steps, 2_048)
    # continue (or just re-evaluate) an earlier pretraining; a directory without its state starts over
    resume = (Path(train_args.out) / TRAIN_STATE_NAME).is_file()
    train_args = dataclasses.replace(train_args, resume=resume, overwrite=not resume)

    print("== 1/2  pretrain PSB (collects rollouts first when missing) ==")
    summary = train(train_args)
    fg_ari = summary["evaluation"].get("1x", {}).get("fg_ari", float("nan"))

    print(f"\n== 2/2  PPO on slots: PSB/OddOneOut-v0, {ppo_steps} steps ==")
    ppo_args = train_ppo.Args(env="PSB/OddOneOut-v0", encoder="slots", checkpoint=summary["checkpoint"],
                              total_steps=ppo_steps, out=str(Path(args.out) / "ppo_slots"), seed=args.seed,
                              device=args.device, eval_freq=max(ppo_steps // 5, 1_000), overwrite=True)
    ppo = train_ppo.train(ppo_args)

    print("\n== done ==")
    print(f"PSB held-out FG-ARI: {fg_ari:.3f}   PPO success rate: {ppo['success_rate']:.3f} "
          f"after {ppo['timesteps']} steps")
    print("wrote:")
    for label, path in [("rollouts", train_args.data), ("PSB checkpoint", summary["checkpoint"]),
                        ("PSB metrics", summary["metrics"]), *[("slot GIF", g) for g in summary["gifs"]],
                        ("loss curve", summary["loss_curve"]), ("PPO model", ppo["model_path"]),
                        ("PPO eval CSV", ppo["csv_path"]), ("PPO curve", ppo["curve_path"]),
                        ("TensorBoard", str(Path(args.out)))]:
        print(f"  {label:<15} {path}")
    print(f"\nnext: tensorboard --logdir {args.out}   |   python agents/evaluate.py --help")
    return 0


if __name__ == "__main__":
    from psb_rl.cli import run_main

    sys.exit(run_main(main))

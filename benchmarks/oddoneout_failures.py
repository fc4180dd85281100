"""Where does a PPO agent fail on ``PSB/OddOneOut-v0``? Identification vs navigation, by colour pair.

    python benchmarks/oddoneout_failures.py --run runs/s6/slots/seed0 --episodes 400

Rolls the agent of ``agents/train_ppo.py`` (greedy actions) and, on a copy of each episode's
simulator taken at reset, the straight-line script of :mod:`envs.scripted` (right object, no
avoidance). Episodes the script solves need no avoidance, so an agent's failures there are failures
to identify the odd object or to steer at it; the rest also need navigation. With
``odd_property="color"`` it also reports the agent's failure rate on script-solvable episodes per
pair of colours (common, odd; unordered), which shows whether similar colours are confused.
Prints a summary and writes JSON.
"""

from __future__ import annotations

import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from agents.evaluate import EvalArgs, load_agent_and_env, run_train_args  # noqa: E402
from envs.object_envs import OddOneOutEnv  # noqa: E402
from envs.scripted import colour_pair, straight_line_succeeds  # noqa: E402
from psb_rl.cli import parse_dataclass  # noqa: E402
from psb_rl.utils import write_json  # noqa: E402


@dataclass
class Args:
    """Failures of a trained OddOneOut agent, split by what the episode needed."""

    run: str = "runs/ppo"
    """run folder of agents/train_ppo.py (args.json and model.zip)"""
    episodes: int = 400
    """episodes to roll (reset seeds seed .. seed + episodes - 1)"""
    seed: int = 10_000
    """first reset seed"""
    torch_threads: int = 1
    """torch CPU threads"""
    out: str | None = None
    """where the JSON goes (default: RUN/failures.json)"""


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Roll the agent, classify every episode, print and write the summary."""
    args: Args = parse_dataclass(Args, argv)
    torch.set_num_threads(args.torch_threads)
    train = run_train_args(EvalArgs(run=args.run))
    model_path = Path(args.run) / "model.zip"
    if not model_path.exists():
        raise SystemExit(f"no agent at {model_path}; pass --run RUN_DIR of agents/train_ppo.py")
    agent, env = load_agent_and_env(train, model_path, torch.device("cpu"))
    core = env.unwrapped
    if not isinstance(core, OddOneOutEnv):
        raise SystemExit(f"the run's environment is {train.env}; this benchmark needs PSB/OddOneOut-v0")

    successes, easy = [], []
    pair_counts: dict[str, list[int]] = defaultdict(lambda: [0, 0])  # failures, episodes
    for episode in range(args.episodes):
        obs, info = env.reset(seed=args.seed + episode)
        script_ok = straight_line_succeeds(core)
        pair = colour_pair(core)
        done = False
        while not done:
            action, _ = agent.predict(obs["slots"] if train.encoder == "slots" else obs, deterministic=True)
            obs, _, terminated, truncated, info = env.step(action)
            done = terminated or truncated
        success = bool(info["is_success"])
        successes.append(success)
        easy.append(script_ok)
        if script_ok and pair is not None:  # the odd one differs by colour
            pair_counts[pair][0] += int(not success)
            pair_counts[pair][1] += 1
    env.close()

    succ, easy_mask = np.array(successes), np.array(easy)
    pairs = sorted(
        ({"colours": pair, "failure_rate": f / n, "episodes": n} for pair, (f, n) in pair_counts.items()),
        key=lambda row: -row["failure_rate"],
    )
    summary = {
        "benchmark": "oddoneout_failures", "run": args.run, "encoder": train.encoder,
        "episodes": args.episodes, "seed": args.seed,
        "success_rate": float(succ.mean()),
        "straight_line_solvable": float(easy_mask.mean()),
        "success_when_straight_line_solves": float(succ[easy_mask].mean()) if easy_mask.any() else float("nan"),
        "success_when_straight_line_fails": float(succ[~easy_mask].mean()) if (~easy_mask).any() else float("nan"),
        "colour_pairs": pairs,
    }
    print(f"{args.run} ({train.encoder}), {args.episodes} episodes: success {summary['success_rate']:.3f}")
    print(f"  episodes the straight line solves ({easy_mask.sum()}): agent success "
          f"{summary['success_when_straight_line_solves']:.3f}")
    print(f"  episodes that need avoidance ({(~easy_mask).sum()}): agent success "
          f"{summary['success_when_straight_line_fails']:.3f}")
    if pairs:
        print("  failure rate on straight-line-solvable episodes, worst colour pairs: " + ", ".join(
            f"{row['colours']} {row['failure_rate']:.2f} ({row['episodes']})" for row in pairs[:6]))
    out = Path(args.out) if args.out else Path(args.run) / "failures.json"
    write_json(out, summary)
    print(f"wrote {out}")
    return summary


if __name__ == "__main__":
    main()

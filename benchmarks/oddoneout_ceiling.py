"""What a success rate means on ``PSB/OddOneOut-v0``: scripted policies with the simulator's state.

    python benchmarks/oddoneout_ceiling.py [--episodes 1000]

Touching any object ends an episode, so the task needs identification (which object is the odd
one) and, where objects start close together, navigation among the other, moving, objects. The three policies of
:mod:`envs.scripted` separate them: ``greedy`` (right object, straight line), ``avoid`` (right object,
one-step look-ahead around the others) and ``avoid_random_target`` (the same navigation to a random
object: what perfect navigation earns without identification). Prints a table and writes JSON.

    python benchmarks/oddoneout_ceiling.py --env-kwargs '{"agent_start": "random", "spacing": 2}' \
        --out benchmarks/results/oddoneout_ceiling_crowded.json     # the crowded layout
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from envs.scripted import POLICIES, evaluate_scripted
from psb_rl.cli import parse_dataclass, parse_env_kwargs
from psb_rl.utils import write_json


@dataclass
class Args:
    """Success rates of scripted reference policies on PSB/OddOneOut-v0."""

    episodes: int = 1000
    """episodes per policy (reset seeds seed .. seed + episodes - 1)"""
    seed: int = 0
    """first reset seed"""
    env_kwargs: str = "{}"
    """keyword arguments of the environment, as JSON (e.g. the layout: agent_start, spacing)"""
    out: str = "benchmarks/results/oddoneout_ceiling.json"
    """where the JSON results go"""


def main(argv: list[str] | None = None) -> dict[str, dict[str, float]]:
    """Evaluate every scripted policy, print the table, write the JSON. :return: results per policy."""
    args: Args = parse_dataclass(Args, argv)
    env_kwargs = parse_env_kwargs(args.env_kwargs)
    results: dict[str, dict[str, float]] = {}
    print(f"PSB/OddOneOut-v0 {env_kwargs or ''}, {args.episodes} episodes per policy")
    print("| policy | success | touched another object | time-out | mean length |")
    print("| --- | --- | --- | --- | --- |")
    for policy in POLICIES:
        start = time.perf_counter()
        row = evaluate_scripted(policy, episodes=args.episodes, seed=args.seed, **env_kwargs)
        row["seconds"] = time.perf_counter() - start
        results[policy] = row
        print(
            f"| {policy} | {row['success_rate']:.3f} | {row['wrong_object_rate']:.3f} | "
            f"{row['timeout_rate']:.3f} | {row['mean_length']:.1f} |"
        )
    write_json(args.out, {"benchmark": "oddoneout_ceiling", "episodes": args.episodes, "seed": args.seed,
                          "env_kwargs": env_kwargs, "results": results})
    print(f"wrote {args.out}")
    return results


if __name__ == "__main__":
    main()

"""Steps per second of each built-in ``PSB/`` env, one env on one core, masks off and on.

    python benchmarks/env_speed.py [--steps 20000] [--out benchmarks/results/env_speed.json]

Prints a table and writes the JSON results atomically. Target: >= 5,000 steps/s with masks off
(pixels observation, ``gym.make`` wrappers included, random actions precomputed).
"""

from __future__ import annotations

import os
import platform
import time
from dataclasses import dataclass
from pathlib import Path

import gymnasium as gym
import numpy as np

from psb_rl import envs
from psb_rl.cli import parse_dataclass
from psb_rl.utils import write_json


@dataclass
class Args:
    """Measure the speed of the built-in PSB/ environments."""

    steps: int = 20_000
    """environment steps per measurement"""
    image_size: int = 64
    """frame size"""
    out: str = "benchmarks/results/env_speed.json"
    """where the JSON results go"""
    seed: int = 0
    """seed of the env and the random actions"""


def measure(env_id: str, steps: int, return_masks: bool, image_size: int = 64, seed: int = 0) -> float:
    """Steps per second of ``env_id`` under random actions (resets included).

    :param env_id: a registered id.
    :param steps: steps to time.
    :param return_masks: render ground-truth masks every step.
    :param image_size: frame size.
    :param seed: reset / action seed.
    :return: steps per second.
    """
    env = gym.make(env_id, return_masks=return_masks, image_size=image_size)
    actions = np.random.default_rng(seed).integers(0, 5, size=steps)
    env.reset(seed=seed)
    start = time.perf_counter()
    for a in actions:
        _, _, terminated, truncated, _ = env.step(a)
        if terminated or truncated:
            env.reset()
    elapsed = time.perf_counter() - start
    env.close()
    return steps / elapsed


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table, write JSON; returns the results."""
    args = parse_dataclass(Args, argv)
    try:  # one core, as the target is stated
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    except (AttributeError, OSError):
        pass
    results = {}
    print(f"{'env id':<24} {'masks off':>12} {'masks on':>12}  (steps/s, one env, one core)")
    for env_id in envs.ENV_IDS:
        off = measure(env_id, args.steps, False, args.image_size, args.seed)
        on = measure(env_id, args.steps, True, args.image_size, args.seed)
        results[env_id] = {"steps_per_s_masks_off": round(off, 1), "steps_per_s_masks_on": round(on, 1)}
        print(f"{env_id:<24} {off:>12,.0f} {on:>12,.0f}")
    payload = {
        "benchmark": "env_speed",
        "steps": args.steps,
        "image_size": args.image_size,
        "python": platform.python_version(),
        "machine": platform.machine(),
        "processor": platform.processor(),
        "time": time.strftime("%Y-%m-%dT%H:%M:%S"),
        "results": results,
    }
    out = Path(args.out)
    write_json(out, payload)
    print(f"wrote {out}")
    return payload


if __name__ == "__main__":
    main()

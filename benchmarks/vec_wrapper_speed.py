"""Batched VecPSBWrapper vs. one PSBObservationWrapper per env: environment steps per second.

    python benchmarks/vec_wrapper_speed.py [--n-envs 16] [--checkpoint psb.ckpt] [--repeats 5]

A: ``VecPSBWrapper(DummyVecEnv([env] * 16))`` — one batched streaming-encoder step for all envs
(plus one for the envs that finished). B: ``DummyVecEnv([PSBObservationWrapper(env)] * 16)`` — 16
streaming encoders of batch 1. Both share one model (default ``PSBConfig()`` with random weights;
speed does not depend on the weights). A and B alternate for ``--repeats`` rounds and the medians
are compared (goal: A ≥ 4× B). The raw pixel VecEnv is timed too, as the ceiling. Prints a table
and writes JSON (atomically) to ``benchmarks/results/vec_wrapper_speed.json``.
"""

from __future__ import annotations

import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import gymnasium as gym
import numpy as np
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecEnv

from psb_rl import PSBAutoencoder, PSBConfig, PSBObservationWrapper, VecPSBWrapper
from psb_rl.cli import parse_dataclass
from psb_rl.utils import resolve_device, write_json


@dataclass
class Args:
    """Compare the batched VecPSBWrapper with per-env PSBObservationWrappers."""

    env: str = "PSB/OddOneOut-v0"
    """environment id"""
    n_envs: int = 16
    """parallel environments"""
    steps: int = 20
    """vectorised steps per measurement (env steps = steps * n_envs)"""
    warmup: int = 5
    """untimed vectorised steps before each measurement"""
    repeats: int = 5
    """alternating A/B rounds (the median is reported)"""
    checkpoint: str | None = None
    """PSB checkpoint (default: PSBConfig() with random weights)"""
    device: str = "cpu"
    """torch device of the encoder"""
    torch_threads: int | None = None
    """torch CPU threads (None: torch's default)"""
    seed: int = 0
    """seed of the envs, the actions and the random weights"""
    out: str = "benchmarks/results/vec_wrapper_speed.json"
    """where the JSON results go"""


def measure(venv: VecEnv, steps: int, warmup: int, seed: int) -> float:
    """Environment steps per second of ``venv`` under random actions (automatic resets included).

    :param venv: the vectorised environment. :param steps: timed vectorised steps.
    :param warmup: untimed steps first. :param seed: action seed.
    :return: env steps per second (``steps * num_envs / seconds``).
    """
    rng = np.random.default_rng(seed)
    actions = rng.integers(0, venv.action_space.n, size=(warmup + steps, venv.num_envs))
    venv.reset()
    for a in actions[:warmup]:
        venv.step(a)
    start = time.perf_counter()
    for a in actions[warmup:]:
        venv.step(a)
    return steps * venv.num_envs / (time.perf_counter() - start)


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table, write the JSON. :return: the results."""
    args: Args = parse_dataclass(Args, argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    if args.checkpoint:
        from psb_rl import load_checkpoint

        model = load_checkpoint(args.checkpoint, device=device)
    else:
        torch.manual_seed(args.seed)
        model = PSBAutoencoder(PSBConfig()).to(device)

    def make() -> gym.Env:
        return gym.make(args.env, obs_mode="pixels")

    def batched() -> VecEnv:
        return VecPSBWrapper(DummyVecEnv([make] * args.n_envs), checkpoint=model, device=device)

    def separate() -> VecEnv:
        return DummyVecEnv(
            [lambda: PSBObservationWrapper(make(), checkpoint=model, device=device)] * args.n_envs
        )

    def raw() -> VecEnv:
        return DummyVecEnv([make] * args.n_envs)

    variants: dict[str, Callable[[], VecEnv]] = {
        "VecPSBWrapper (batched)": batched,
        "PSBObservationWrapper x n": separate,
        "raw pixels (no encoder)": raw,
    }
    venvs = {name: build() for name, build in variants.items()}
    for venv in venvs.values():
        venv.seed(args.seed)
    rates: dict[str, list[float]] = {name: [] for name in venvs}
    for r in range(args.repeats):
        order = list(venvs) if r % 2 == 0 else list(reversed(venvs))
        for name in order:
            rates[name].append(measure(venvs[name], args.steps, args.warmup, args.seed + r))
        print(f"round {r + 1}/{args.repeats}: " + ", ".join(f"{n}: {rates[n][-1]:.0f}/s" for n in venvs))
    medians = {name: statistics.median(v) for name, v in rates.items()}
    a, b = "VecPSBWrapper (batched)", "PSBObservationWrapper x n"
    speedup = medians[a] / medians[b]
    paired = statistics.median(x / y for x, y in zip(rates[a], rates[b]))  # robust to drifting machine load

    cfg = model.config
    print(f"\n{args.env}, {args.n_envs} envs, PSB N={cfg.num_slots} D={cfg.slot_dim} M={cfg.num_blocks} "
          f"W={cfg.window} {cfg.image_size}px on {device} ({torch.get_num_threads()} threads)")
    print(f"| {'variant':<28} | {'env steps/s (median)':>20} | {'min':>8} | {'max':>8} |")
    print(f"|{'-' * 30}|{'-' * 22}|{'-' * 10}|{'-' * 10}|")
    for name, values in rates.items():
        print(f"| {name:<28} | {medians[name]:>20.1f} | {min(values):>8.1f} | {max(values):>8.1f} |")
    print(f"\nspeed-up batched / separate: {speedup:.2f}x (ratio of medians), {paired:.2f}x (median of "
          f"per-round ratios); goal >= 4x: {'PASS' if speedup >= 4 else 'FAIL'}")

    result = {
        "benchmark": "vec_wrapper_speed",
        "args": asdict(args),
        "config": cfg.to_dict(),
        "device": str(device),
        "torch_threads": torch.get_num_threads(),
        "platform": platform.platform(),
        "processor": platform.processor(),
        "torch": torch.__version__,
        "env_steps_per_s": rates,
        "median_env_steps_per_s": medians,
        "speedup": speedup,
        "speedup_paired_median": paired,
        "goal": 4.0,
        "passed": speedup >= 4.0,
    }
    write_json(args.out, result)
    print(f"wrote {args.out}")
    for venv in venvs.values():
        venv.close()
    return result


if __name__ == "__main__":
    main()

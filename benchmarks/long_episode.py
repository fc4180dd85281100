"""One very long episode through both wrappers: resident memory and step time must stay flat.

``PSBObservationWrapper`` and ``VecPSBWrapper`` (over one ``DummyVecEnv`` env) each run ``--steps`` steps of a
single ``PSB/RandomObjects-v0`` episode (the env has no task, so nothing ends it, and its 100-step time limit is
lifted above the run's length). The encoder is a randomly initialised ``PSBAutoencoder``: this measures cost, not
quality, and a trained checkpoint of the same config costs the same. ``--model small`` (the default: 4 slots of
32, one block, windows of 4 as in ``PSBConfig()``) keeps 2 x 100,000 steps to about 15 minutes on a 2-core CPU;
``--model default`` is ``PSBConfig()``, the CPU-sized default that ``pretrain/train_psb.py`` trains (about three
times the step cost). Both keep the same per-step state: ring buffers of the last ``window`` steps.

Every ``--every`` steps a row records the process's resident memory (``/proc/self/statm``) and the median wrapper
step time over the last ``--window`` steps (environment step included; CPU time of this process, with the wall
time beside it). The machine's load changes over a long run, so each row also times, during the same window and
step for step, a second wrapper whose episode starts at the window's start: the ratio of the two medians compares
step 100,000 with an episode's first 1,000 steps at the same moment. Targets: memory at the last row within 1 % of
the row at ``--baseline`` steps, and that ratio at the last row at most 1.1.

    python benchmarks/long_episode.py                        # 100,000 steps per wrapper (~15 min on 2 cores)
    python benchmarks/long_episode.py --quick                # 10,000 steps, a row every 1,000

Writes benchmarks/results/long_episode.json (long_episode_quick.json with --quick).
"""

from __future__ import annotations

import argparse
import gc
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from psb_rl.utils import repository_commit  # noqa: E402

ENV_ID = "PSB/RandomObjects-v0"
MEMORY_TARGET = 0.01
"""Largest allowed growth of resident memory from the baseline row to the last."""
TIME_TARGET = 1.1
"""Largest allowed ratio of the last row's median step time to the baseline row's."""


MODELS = {
    "small": {"num_slots": 4, "slot_dim": 32, "num_blocks": 1, "num_heads": 2, "encoder_channels": 16,
              "decoder_channels": 16},
    "default": {},
}
"""PSBConfig fields of each --model (the rest are PSBConfig's defaults)."""


def resident_bytes() -> int:
    """The process's resident memory in bytes (Linux ``/proc/self/statm``)."""
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def _make_env(steps: int) -> Any:
    import gymnasium as gym

    import envs  # noqa: F401  (registers the PSB/ ids)

    return gym.make(ENV_ID, obs_mode="pixels", max_episode_steps=steps + 10)  # the time limit lifted


def _stepper(kind: str, model: Any, steps: int, seed: int) -> tuple[Any, Any]:
    """A wrapper over one env: ``(step(action) -> done, reset())``."""
    from stable_baselines3.common.vec_env import DummyVecEnv

    from psb_rl import PSBObservationWrapper, VecPSBWrapper

    if kind == "PSBObservationWrapper":
        env = PSBObservationWrapper(_make_env(steps), checkpoint=model)

        def step(action: int) -> bool:
            _, _, terminated, truncated, _ = env.step(action)
            return terminated or truncated

        return step, lambda: env.reset(seed=seed)
    venv = VecPSBWrapper(DummyVecEnv([lambda: _make_env(steps)]), checkpoint=model)
    venv.seed(seed)

    def vec_step(action: int) -> bool:
        _, _, dones, _ = venv.step(np.array([action]))
        return bool(dones[0])

    return vec_step, venv.reset


def _timed(step: Any, action: int) -> tuple[bool, float, float]:
    start, cpu_start = time.perf_counter(), time.process_time()
    done = step(action)
    return done, time.process_time() - cpu_start, time.perf_counter() - start


def run_wrapper(kind: str, model: Any, steps: int, every: int, window: int, baseline: int,
                seed: int = 0) -> list[dict[str, float]]:
    """Step one episode through a wrapper and record memory and step time.

    During the ``window`` steps before each row a second wrapper of the same kind, reset at the window's start,
    takes a step after each step of the long episode: its median is the cost of an episode's first ``window``
    steps measured at the same moment, so the ratio of the two medians is free of the machine's load changes.

    :param kind: ``"PSBObservationWrapper"`` or ``"VecPSBWrapper"``.
    :param model: the PSB model.
    :param steps: episode length.
    :param every: a row every this many steps.
    :param window: steps whose median time a row reports.
    :param baseline: a row at this step too (the one later rows are compared with).
    :return: rows ``{"step", "rss_mb", "median_step_ms", "median_wall_ms", "reference_step_ms",
        "ratio_to_reference"}`` (step times are CPU time of this process, except ``median_wall_ms``).
    """
    rng = np.random.default_rng(seed)
    step, reset = _stepper(kind, model, steps, seed)
    reference_step, reference_reset = _stepper(kind, model, steps, seed + 1)
    reset()
    marks = sorted({t for t in range(every, steps + 1, every)} | {steps, min(baseline, steps)})
    actions = rng.integers(0, 5, steps)
    # written now, so their pages are resident before the first row (np.zeros maps them lazily, and filling them
    # in would show as growth that the wrappers do not cause)
    times = np.full(steps, np.nan)
    cpu_times = np.full(steps, np.nan)
    reference = np.full(window, np.nan)
    rows: list[dict[str, float]] = []
    gc.collect()
    mark = 0
    for t in range(steps):
        in_window = marks[mark] - window <= t
        if in_window and t == max(0, marks[mark] - window):
            reference_reset()
        done, cpu_times[t], times[t] = _timed(step, int(actions[t]))
        if done:
            raise RuntimeError(f"the episode ended at step {t + 1}; it must last {steps} steps")
        if in_window:
            _, reference[(t - marks[mark]) % window], _ = _timed(reference_step, int(actions[t]))
        if t + 1 == marks[mark]:
            recent = slice(max(0, t + 1 - window), t + 1)
            long_ms = 1000 * float(np.nanmedian(cpu_times[recent]))
            reference_ms = 1000 * float(np.nanmedian(reference))
            rows.append({"step": t + 1, "rss_mb": round(resident_bytes() / 2**20, 2),
                         "median_step_ms": round(long_ms, 4),
                         "median_wall_ms": round(1000 * float(statistics.median(times[recent])), 4),
                         "reference_step_ms": round(reference_ms, 4),
                         "ratio_to_reference": round(long_ms / reference_ms, 4)})
            print(f"  {kind:<22} step {t + 1:>7}: rss {rows[-1]['rss_mb']:8.1f} MB, median step "
                  f"{long_ms:.3f} ms CPU ({rows[-1]['median_wall_ms']:.3f} ms wall), an episode's first steps "
                  f"now {reference_ms:.3f} ms: x{rows[-1]['ratio_to_reference']:.3f}", flush=True)
            reference[:] = np.nan
            mark = min(mark + 1, len(marks) - 1)
    return rows


def verdict(rows: list[dict[str, float]], baseline: int) -> dict[str, Any]:
    """Memory growth and step-time ratio from the row at ``baseline`` steps to the last row."""
    first = next(row for row in rows if row["step"] >= baseline)
    last = rows[-1]
    growth = float((last["rss_mb"] - first["rss_mb"]) / first["rss_mb"])
    ratio = float(last["median_step_ms"] / first["median_step_ms"])
    wall = float(last["median_wall_ms"] / first["median_wall_ms"])
    same_moment = float(last["ratio_to_reference"])
    return {"baseline_step": first["step"], "last_step": last["step"], "memory_growth": round(growth, 5),
            "step_time_ratio_to_reference": round(same_moment, 4), "step_time_ratio_to_baseline_row": round(ratio, 4),
            "wall_time_ratio_to_baseline_row": round(wall, 4), "memory_ok": growth <= MEMORY_TARGET,
            "time_ok": same_moment <= TIME_TARGET}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=100_000, help="steps of the episode (default 100000)")
    parser.add_argument("--every", type=int, default=10_000, help="a row every this many steps (default 10000)")
    parser.add_argument("--baseline", type=int, default=1_000, help="the row the last is compared with (default 1000)")
    parser.add_argument("--window", type=int, default=1_000, help="steps per median step time (default 1000)")
    parser.add_argument("--torch-threads", type=int, default=1, help="torch CPU threads (default 1)")
    parser.add_argument("--model", choices=sorted(MODELS), default="small", help="model size (default small)")
    parser.add_argument("--quick", action="store_true", help="10,000 steps, a row every 1,000")
    parser.add_argument("--out", default=None, help="results JSON (default benchmarks/results/long_episode.json)")
    args = parser.parse_args(argv)
    if args.quick:
        args.steps, args.every = 10_000, 1_000
    for name in ("steps", "every", "baseline", "window", "torch_threads"):
        if getattr(args, name) < 1:
            parser.error(f"--{name.replace('_', '-')} must be >= 1, got {getattr(args, name)}")
    out = Path(args.out or ROOT / "benchmarks" / "results" /
               ("long_episode_quick.json" if args.quick else "long_episode.json"))
    torch.set_num_threads(args.torch_threads)
    torch.manual_seed(0)
    from psb_rl import PSBAutoencoder, PSBConfig

    config = PSBConfig(**MODELS[args.model])
    model = PSBAutoencoder(config)  # randomly initialised: cost, not quality
    wrappers = {}
    for kind in ("PSBObservationWrapper", "VecPSBWrapper"):
        print(f"{kind}: {args.steps} steps of one {ENV_ID} episode", flush=True)
        baseline = min(args.baseline, args.steps)
        rows = run_wrapper(kind, model, args.steps, args.every, args.window, baseline)
        wrappers[kind] = {"rows": rows, **verdict(rows, baseline)}
    record = {
        "benchmark": "long_episode",
        "command": "python benchmarks/long_episode.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": repository_commit(ROOT),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
                    "torch_threads": torch.get_num_threads()},
        "env": ENV_ID,
        "model": f"PSBAutoencoder, randomly initialised ({args.model})",
        "config": config.to_dict(),
        "steps": args.steps,
        "every": args.every,
        "window": args.window,
        "targets": {"memory_growth": MEMORY_TARGET, "step_time_ratio_to_reference": TIME_TARGET},
        "wrappers": wrappers,
    }
    from psb_rl.utils import write_json

    write_json(out, record)
    print(f"\n{'wrapper':<22} {'rss at base':>11} {'rss at end':>10} {'growth':>8} {'step at end':>11} "
          f"{'first steps':>11} {'ratio':>6}")
    for kind, result in wrappers.items():
        rows = result["rows"]
        first = next(row for row in rows if row["step"] == result["baseline_step"])
        print(f"{kind:<22} {first['rss_mb']:>9.1f}MB {rows[-1]['rss_mb']:>8.1f}MB {100 * result['memory_growth']:>7.2f}% "
              f"{rows[-1]['median_step_ms']:>9.3f}ms {rows[-1]['reference_step_ms']:>9.3f}ms "
              f"{result['step_time_ratio_to_reference']:>6.3f}")
    print(f"wrote {out}")
    ok = all(result["memory_ok"] and result["time_ok"] for result in wrappers.values())
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())

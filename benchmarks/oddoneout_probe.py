"""Can the answer of PSB/OddOneOut-v0 be read from frozen slots? A supervised probe, no RL.

    python benchmarks/oddoneout_probe.py --checkpoint runs/psb_odd_colour/psb.ckpt
    python benchmarks/oddoneout_probe.py --quick      # seconds: a pipeline check with a random tiny PSB

Random-policy steps of 16 environments are encoded by ``VecPSBWrapper`` (slots) or kept as the
ground-truth objects (``obs_mode="state"``). Each step is labelled with the move that brings the agent
straight towards the odd object (:func:`envs.scripted.scripted_action`, no avoidance): to get it right
a reader must find the odd object among the others *and* where it lies from the agent, the two things
PPO has to learn from the reward. A ``SlotTransformerExtractor`` (the agents' default) plus a linear
head is trained on the labels with cross-entropy, for each observation and each training-set size,
and scored on held-out steps of other episodes. If slots reach the state's accuracy with enough
samples, the slots hold the answer and what is left to the agent is sample efficiency.

Moves where the two axes are almost equally far are ambiguous, so even the state stays below 1.
Prints a table and writes JSON.
"""

from __future__ import annotations

import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402
from stable_baselines3.common.env_util import make_vec_env  # noqa: E402

import envs  # noqa: E402, F401  (registers PSB/ ids)
from envs.scripted import scripted_action  # noqa: E402
from psb_rl import SlotTransformerExtractor, VecPSBWrapper  # noqa: E402
from psb_rl.cli import parse_dataclass, parse_env_kwargs  # noqa: E402
from psb_rl.utils import write_json  # noqa: E402

NUM_ENVS = 16


@dataclass
class ProbeArgs:
    """Supervised probe of frozen slots vs. ground-truth objects on PSB/OddOneOut-v0."""

    checkpoint: str | None = None
    """PSB checkpoint whose slots are probed (required unless --quick)"""
    train_sizes: str = "20000,100000"
    """comma-separated numbers of training steps (labelled observations)"""
    test_size: int = 20000
    """held-out steps (other reset seeds)"""
    epochs: int = 15
    """passes over the training set"""
    embed_layers: int = 1
    """per-slot embedding of the extractor: 1 (linear, the agents' default) or 2 (MLP)"""
    relation: bool = False
    """pairwise relation features in the extractor (``SlotTransformerExtractor(relation=True)``)"""
    observations: str = "slots,state"
    """comma-separated: slots (the checkpoint through VecPSBWrapper) and/or state (ground truth)"""
    env_kwargs: str = "{}"
    """keyword arguments of PSB/OddOneOut-v0, as JSON (e.g. the layout)"""
    seed: int = 0
    """seed of the environments, the random policy and the probe"""
    out: str = "benchmarks/results/oddoneout_probe.json"
    """where the JSON results go"""
    quick: bool = False
    """a pipeline check: a random tiny PSB, 512 steps, 2 epochs (numbers mean nothing)"""


def collect(observation: str, checkpoint: str | None, steps: int, seed: int, env_kwargs: dict
            ) -> tuple[torch.Tensor, torch.Tensor]:
    """Observations and straight-line labels of ``steps`` random-policy steps.

    :return: float ``(steps, K, F)`` observations and long ``(steps,)`` labels in ``0..3`` (moves 1..4).
    """
    kwargs = {**env_kwargs, "obs_mode": "state" if observation == "state" else "pixels"}
    raw = make_vec_env("PSB/OddOneOut-v0", n_envs=NUM_ENVS, seed=seed, env_kwargs=kwargs)
    venv = VecPSBWrapper(raw, checkpoint=checkpoint, device="cpu") if observation == "slots" else raw
    cores = [env.unwrapped for env in raw.envs]
    rng = np.random.default_rng(seed)
    obs = venv.reset()
    xs, ys = [], []
    for _ in range(-(-steps // NUM_ENVS)):
        xs.append(np.asarray(obs, dtype=np.float32).copy())
        ys.append([scripted_action(core, core.odd_index, avoid=False) - 1 for core in cores])
        obs, *_ = venv.step(rng.integers(0, 5, size=NUM_ENVS))
    venv.close()
    return torch.from_numpy(np.concatenate(xs)[:steps]), torch.tensor(np.concatenate(ys)[:steps])


def fit_and_score(train_x: torch.Tensor, train_y: torch.Tensor, test_x: torch.Tensor, test_y: torch.Tensor,
                  mask_feature_index: int | None, epochs: int, seed: int, embed_layers: int = 1,
                  relation: bool = False) -> dict[str, float]:
    """Train extractor + linear head with cross-entropy. :return: train and test accuracy."""
    torch.manual_seed(seed)
    space = gym.spaces.Box(-np.inf, np.inf, tuple(train_x.shape[1:]), np.float32)
    extractor = SlotTransformerExtractor(space, embed_layers=embed_layers, relation=relation,
                                         mask_feature_index=mask_feature_index)
    net = torch.nn.Sequential(extractor, torch.nn.Linear(extractor.features_dim, 4))
    optimiser = torch.optim.Adam(net.parameters(), lr=3e-4)
    for _ in range(epochs):
        order = torch.randperm(len(train_x))
        for start in range(0, len(train_x), 256):
            batch = order[start:start + 256]
            loss = torch.nn.functional.cross_entropy(net(train_x[batch]), train_y[batch])
            optimiser.zero_grad()
            loss.backward()
            optimiser.step()

    def accuracy(x: torch.Tensor, y: torch.Tensor) -> float:
        with torch.no_grad():
            return float(torch.cat([net(x[i:i + 4096]).argmax(1) for i in range(0, len(x), 4096)]).eq(y).float().mean())

    return {"train_accuracy": accuracy(train_x[: len(test_x)], train_y[: len(test_x)]),
            "test_accuracy": accuracy(test_x, test_y)}


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Collect, fit a probe per (observation, training size), print and write the results."""
    args: ProbeArgs = parse_dataclass(ProbeArgs, argv)
    sizes = [int(s) for s in args.train_sizes.split(",") if s.strip()]
    observations = [o.strip() for o in args.observations.split(",") if o.strip()]
    env_kwargs = parse_env_kwargs(args.env_kwargs)
    checkpoint = args.checkpoint
    if args.quick:
        sizes, args.test_size, args.epochs = [512], 256, 2
        if checkpoint is None and "slots" in observations:
            from benchmarks.rl_oddoneout import tiny_random_checkpoint

            checkpoint = str(tiny_random_checkpoint(Path(tempfile.mkdtemp()) / "tiny_psb.ckpt"))
    if "slots" in observations and checkpoint is None:
        raise SystemExit("--observations slots needs --checkpoint PATH (a pretrained PSB); or use --quick")
    bad = set(observations) - {"slots", "state"}
    if bad:
        raise SystemExit(f"--observations takes slots and/or state, got {sorted(bad)}")

    rows = []
    print(f"| observation | training steps | train accuracy | test accuracy ({args.test_size} steps) | fit seconds |")
    print("| --- | --- | --- | --- | --- |")
    for observation in observations:
        start = time.perf_counter()
        test_x, test_y = collect(observation, checkpoint, args.test_size, args.seed + 1_000, env_kwargs)
        # one rollout serves every size: a smaller training set is a prefix of the same seeded stream
        all_x, all_y = collect(observation, checkpoint, max(sizes), args.seed, env_kwargs)
        collect_seconds = time.perf_counter() - start
        for size in sizes:
            start = time.perf_counter()
            mask = -1 if observation == "state" else None  # the state's last feature flags present objects
            score = fit_and_score(all_x[:size], all_y[:size], test_x, test_y, mask, args.epochs, args.seed,
                                  args.embed_layers, args.relation)
            row = {"observation": observation, "train_steps": size, **score,
                   "fit_seconds": time.perf_counter() - start, "collect_seconds": collect_seconds}
            rows.append(row)
            print(f"| {observation} | {size} | {score['train_accuracy']:.3f} | {score['test_accuracy']:.3f} | "
                  f"{row['fit_seconds']:.0f} |", flush=True)
    summary = {"benchmark": "oddoneout_probe", "checkpoint": checkpoint, "env_kwargs": env_kwargs,
               "epochs": args.epochs, "embed_layers": args.embed_layers,
               "relation": args.relation, "test_size": args.test_size, "quick": args.quick, "results": rows}
    out = Path(args.out).with_name(Path(args.out).stem + "_quick.json") if args.quick else Path(args.out)
    write_json(out, summary)
    print(f"wrote {out}")
    return summary


if __name__ == "__main__":
    main()

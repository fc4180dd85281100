"""Can a network read a good policy off the slots? Distil a trained pixel agent into fresh networks that
see only the slots (or their geometry, or the frames as the control) and score them on held-out episodes.

    python benchmarks/policy_probe.py --teacher runs/doorkey_pixels/model.zip \\
        --checkpoint runs/doorkey/psb.ckpt --data data/doorkey data/doorkey_agent

A slot agent that does not learn may lack the information (the slots do not carry what the policy needs)
or fail to find it (an RL problem). This separates the two: the teacher's action distribution on every
stored frame is the target, each student is trained by cross-entropy to it on 80 % of the episodes and
scored on the rest (KL to the teacher, agreement of the most likely action). The frames student (a fresh
NatureCNN, the teacher's own architecture) says how well the recipe distils at all; a slot student close
to it means the slots carry the policy; one at the majority-action baseline means they do not.

Students: ``frames`` (NatureCNN), ``slots`` (the slot vectors), ``geometry``
(:meth:`psb_rl.PSBAutoencoder.slot_geometry` only), ``slots+geometry``; the slot students use the agents'
extractor (:class:`psb_rl.extractors.SlotTransformerExtractor`, default settings). Output: a JSON report
(``--out``) with the command, commit, date, machine and the checkpoint's and teacher's SHA-256.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn.functional as F

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script from a clone
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.train_speed import machine_info
from psb_rl.cli import bounded, parse_dataclass, run_main

STUDENTS = ("frames", "slots", "geometry", "slots+geometry")


@dataclass
class Args:
    """Distil a pixel agent into slot-input networks: do the slots carry its policy?"""

    teacher: str = ""
    """a pixel agent of agents/train_ppo.py (RUN/model.zip; its args.json beside it)"""
    checkpoint: str = ""
    """the PSB checkpoint whose slots the students see"""
    data: list[str] = field(default_factory=list)
    """rollout folders (pretrain/collect_rollouts.py) at the teacher's frame size"""
    students: list[str] = field(default_factory=lambda: list(STUDENTS))
    """which students: frames, slots, geometry, slots+geometry"""
    steps: int = bounded(2000, min=1)
    """gradient steps per student"""
    batch_size: int = bounded(256, min=1)
    """frames per gradient step"""
    learning_rate: float = bounded(3e-4, gt=0)
    """Adam learning rate"""
    test_fraction: float = bounded(0.2, gt=0, max=0.9)
    """share of the episodes held out for scoring"""
    seed: int = bounded(0, min=0)
    """seed of the split, the students' weights and the batches"""
    out: str = "benchmarks/results/policy_probe.json"
    """the JSON report"""
    torch_threads: int = bounded(1, min=1)
    """torch CPU threads"""


def load_episodes(folders: list[str]) -> list[np.ndarray]:
    """Every stored episode's frames, uint8 ``(T, H, W, 3)``, folder by folder."""
    from psb_rl.shards import load_shard_episodes, verify_rollouts

    episodes = []
    for folder in folders:
        manifest = verify_rollouts(folder)
        for entry in manifest["shards"]:
            episodes += [episode["frames"] for episode in load_shard_episodes(Path(folder) / entry["file"])]
    return episodes


def teacher_action_space(teacher: str) -> gym.Space:
    """The action space of the env the teacher was trained on (its run's ``args.json``), which must be a
    pixel agent's."""
    from psb_rl.agent_io import read_run_record
    from psb_rl.environments import ensure_registered

    record = read_run_record(Path(teacher).parent) or {}
    if "env" not in record:
        raise ValueError(f"--teacher {teacher}: no args.json of agents/train_ppo.py beside it; pass a run's model.zip")
    if record.get("encoder") != "pixels":
        raise ValueError(f"--teacher must be a pixel agent (the frames are its input); {teacher} is a "
                         f"{record.get('encoder')} agent")
    ensure_registered(record["env"], record.get("gym_packages", []))
    env = gym.make(record["env"])
    space = env.action_space
    env.close()
    return space


def teacher_probabilities(teacher: Any, episodes: list[np.ndarray]) -> np.ndarray:
    """The teacher's action probabilities on every frame, ``(frames, actions)``."""
    out = []
    with torch.inference_mode():
        for frames in episodes:
            obs = torch.as_tensor(np.ascontiguousarray(np.moveaxis(frames, -1, 1)))  # as VecTransposeImage gives them
            out.append(teacher.policy.get_distribution(obs).distribution.probs.float().numpy())
    return np.concatenate(out)


def slot_features(model: torch.nn.Module, episodes: list[np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """Slots ``(frames, N, D)`` and their geometry ``(frames, N, G)``, each episode encoded causally from its
    first frame (as the streaming encoder gives them in an env)."""
    from psb_rl.preprocessing import preprocess_frames

    slots, geometry = [], []
    with torch.inference_mode():
        for frames in episodes:
            video = preprocess_frames(frames, model.config.image_size)
            episode_slots = model.encode(video[None])[0]
            slots.append(episode_slots.float().numpy())
            geometry.append(model.slot_geometry(episode_slots, video).numpy())
    return np.concatenate(slots), np.concatenate(geometry)


def student_inputs(name: str, frames: np.ndarray, slots: np.ndarray, geometry: np.ndarray) -> np.ndarray:
    """What student ``name`` sees: frames channels-first, or slot features ``(frames, N, F)``."""
    if name == "frames":
        return np.ascontiguousarray(np.moveaxis(frames, -1, 1))
    return {"slots": slots, "geometry": geometry, "slots+geometry": np.concatenate([slots, geometry], -1)}[name]


def make_student(name: str, inputs: np.ndarray, actions: int) -> torch.nn.Module:
    """A fresh network: NatureCNN for frames, the agents' slot extractor otherwise, then a linear head."""
    from stable_baselines3.common.torch_layers import NatureCNN

    from psb_rl.extractors import SlotTransformerExtractor

    if name == "frames":
        extractor = NatureCNN(gym.spaces.Box(0, 255, inputs.shape[1:], np.uint8), 128)
    else:
        extractor = SlotTransformerExtractor(gym.spaces.Box(-np.inf, np.inf, inputs.shape[1:], np.float32), 128)
    return torch.nn.Sequential(extractor, torch.nn.Linear(128, actions))


def as_batch(inputs: np.ndarray, rows: np.ndarray) -> torch.Tensor:
    """Rows of the inputs as a float tensor (frames scaled to [0, 1], as SB3 does)."""
    batch = torch.as_tensor(inputs[rows])
    return batch.float() / 255.0 if batch.dtype == torch.uint8 else batch


def distil(name: str, inputs: np.ndarray, targets: np.ndarray, train: np.ndarray, test: np.ndarray,
           args: Args) -> dict[str, float]:
    """Train student ``name`` to the teacher's probabilities on ``train`` rows; score it on ``test`` rows."""
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    student = make_student(name, inputs, targets.shape[1])
    optimiser = torch.optim.Adam(student.parameters(), lr=args.learning_rate)
    target = torch.as_tensor(targets)
    start = time.perf_counter()
    for _ in range(args.steps):
        rows = rng.choice(train, args.batch_size)
        loss = -(target[rows] * F.log_softmax(student(as_batch(inputs, rows)), -1)).sum(-1).mean()
        optimiser.zero_grad()
        loss.backward()
        optimiser.step()
    with torch.no_grad():
        log_probs = torch.cat([F.log_softmax(student(as_batch(inputs, test[i:i + 1024])), -1)
                               for i in range(0, len(test), 1024)])
    teacher = target[test]
    kl = (teacher * (teacher.clamp(min=1e-8).log() - log_probs)).sum(-1).mean().item()
    agreement = (log_probs.argmax(-1) == teacher.argmax(-1)).float().mean().item()
    return {"test_kl": kl, "action_agreement": agreement, "train_seconds": time.perf_counter() - start}


def run(args: Args) -> dict[str, Any]:
    """Encode the episodes, distil each student, write and return the report."""
    from psb_rl.agent_io import load_agent_policy
    from psb_rl.shards import sha256_file
    from psb_rl.utils import repository_commit, write_json
    from psb_rl.wrappers import load_frozen_encoder

    unknown = sorted(set(args.students) - set(STUDENTS))
    if unknown or not args.teacher or not args.checkpoint or not args.data:
        raise ValueError(f"need --teacher, --checkpoint, --data and students from {STUDENTS} (got unknown {unknown})")
    torch.set_num_threads(args.torch_threads)
    action_space = teacher_action_space(args.teacher)
    episodes = load_episodes(args.data)
    frame_space = gym.spaces.Box(0, 255, episodes[0].shape[1:], np.uint8)
    policy = load_agent_policy(args.teacher, frame_space, action_space)
    model = load_frozen_encoder(args.checkpoint, "cpu")
    frames = np.concatenate(episodes)
    targets = teacher_probabilities(policy.agent, episodes)
    slots, geometry = slot_features(model, episodes)
    episode_of = np.concatenate([np.full(len(e), i) for i, e in enumerate(episodes)])
    rng = np.random.default_rng(args.seed)
    held_out = rng.choice(len(episodes), max(1, round(args.test_fraction * len(episodes))), replace=False)
    test_mask = np.isin(episode_of, held_out)
    train, test = np.flatnonzero(~test_mask), np.flatnonzero(test_mask)
    majority = np.bincount(targets[train].argmax(-1), minlength=targets.shape[1]).argmax()
    results = {}
    for name in args.students:
        results[name] = distil(name, student_inputs(name, frames, slots, geometry), targets, train, test, args)
        print(f"{name:>15}: KL to the teacher {results[name]['test_kl']:.3f}, "
              f"action agreement {results[name]['action_agreement']:.3f}", flush=True)
    report = {
        "command": "python benchmarks/policy_probe.py " + " ".join(sys.argv[1:]),
        "commit": repository_commit(Path(__file__).parent), "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(torch.device("cpu")),
        "teacher_sha256": sha256_file(args.teacher), "checkpoint_sha256": sha256_file(args.checkpoint),
        "episodes": {"train": len(episodes) - len(held_out), "test": len(held_out)},
        "frames": {"train": len(train), "test": len(test)},
        "majority_action_agreement": float((targets[test].argmax(-1) == majority).mean()),
        "students": results,
    }
    write_json(args.out, report)
    return report


def main(argv: list[str] | None = None) -> int:
    run(parse_dataclass(Args, argv))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))

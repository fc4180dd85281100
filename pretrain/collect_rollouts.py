"""Collect environment videos as checksummed shards for PSB pretraining.

Examples::

    python pretrain/collect_rollouts.py --env PSB/RandomObjects-v0 --episodes 1000 --num-envs 4 --out data/random
    python pretrain/collect_rollouts.py --env ALE/Pong-v5 --episodes 20 --crop 34 16 0 0 --resize 96 --out data/pong
    python pretrain/collect_rollouts.py --env MiniGrid-DoorKey-5x5-v0 --pixels render --resize 64 --out data/doorkey
    python pretrain/collect_rollouts.py --env MyEnv-v0 --gym-packages my_package ...   # ids other packages register
    python pretrain/collect_rollouts.py ... --resume        # finish an interrupted collection
    python pretrain/collect_rollouts.py --out data/random --repair   # re-collect missing/corrupted shards

The format is documented in :mod:`psb_rl.rollouts`; the frame pipeline (source, crop, resize) is recorded in
the manifest as ``frame_pipeline`` and travels into the checkpoint and the agent (:mod:`psb_rl.frames`).
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from typing import Literal

from psb_rl.cli import bounded, parse_dataclass, parse_env_kwargs, run_main
from psb_rl.frames import size_from_flag
from psb_rl.rollouts import collect_rollouts, repair_rollouts
from psb_rl.utils import set_torch_threads


@dataclass
class Args:
    """Collect environment videos as checksummed shards (see psb_rl.rollouts for the format)."""

    out: str = field(metadata={"help": "output directory (manifest.json + shard-*.npz)"})
    env: str = "PSB/RandomObjects-v0"
    """gymnasium id; PSB/, ALE/, MiniGrid-/BabyAI- ids are registered automatically (else --gym-packages)"""
    episodes: int | None = bounded(None, min=1)
    """number of whole episodes to collect (default 100 when --steps is not given)"""
    steps: int | None = bounded(None, min=1)
    """collect whole episodes until at least this many steps are stored"""
    num_envs: int = bounded(1, min=1)
    """parallel environments (AsyncVectorEnv workers when > 1)"""
    policy: str = "random"
    """'random' or the model.zip of an agents/train_ppo.py run (slots, pixels or state; rebuilt from its
    args.json, never unpickled)"""
    deterministic_policy: bool = False
    """act deterministically with an SB3 policy"""
    pixels: Literal["obs", "render"] = "obs"
    """'obs': frames are the image observations; 'render': frames are env.render() (non-image envs)"""
    crop: tuple[int, int, int, int] = bounded((0, 0, 0, 0), min=0)
    """pixels cut off the top, bottom, left and right of each frame before resizing (e.g. Atari score bars)"""
    resize: list[int] | None = bounded(None, min=1)
    """store frames resized to N x N (one value) or H x W (two values), same filter as training"""
    gym_packages: list[str] = field(default_factory=list)
    """extra packages to import that register the --env id (as RL Zoo's --gym-packages)"""
    torch_threads: int | None = bounded(1, min=1)
    """torch CPU threads for resizing (None: torch's default)"""
    seed: int = bounded(0, min=0)
    """collection seed: episode i is reset with psb_rl.rollouts.episode_seed(seed, i)"""
    resume: bool = False
    """continue the collection in --out until the requested amount is stored"""
    repair: bool = False
    """drop the missing or corrupted shards of the collection in --out and collect them again, exactly, with
    the settings stored in its manifest (only --out, --num-envs and --progress are read)"""
    episodes_per_shard: int = bounded(100, min=1)
    """episodes per shard file"""
    max_episode_steps: int | None = bounded(None, min=1)
    """override the env's time limit"""
    env_kwargs: str | None = None
    """JSON dict of extra gym.make kwargs, e.g. '{"obs_mode": "state"}' (default with --policy model.zip: the
    rendering options of the agent's PSB checkpoint and its run's --env-kwargs)"""
    masks: bool = True
    """store ground-truth masks where they can be had: PSB/ envs, MiniGrid (from the grid), Atari (OCAtari, optional)"""
    compress: bool = False
    """write compressed shards (smaller, but not memory-mappable)"""
    progress: bool = True
    """show a progress bar"""


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, collect, print the manifest summary. Returns the exit code."""
    args = parse_dataclass(Args, argv)
    episodes = args.episodes if args.episodes is not None or args.steps is not None else 100
    env_kwargs = parse_env_kwargs(args.env_kwargs)
    if args.env_kwargs is None and args.policy != "random" and not args.repair:
        from psb_rl.agent_io import agent_env_kwargs

        env_kwargs = agent_env_kwargs(args.policy)  # the env the agent acted in
    set_torch_threads(args.torch_threads)
    if args.repair:
        manifest = repair_rollouts(args.out, num_envs=args.num_envs, progress=args.progress)
    else:
        manifest = collect_rollouts(
            args.env, args.out, episodes=episodes, steps=args.steps, num_envs=args.num_envs,
            policy=args.policy, pixels=args.pixels, resize=size_from_flag(args.resize), seed=args.seed, resume=args.resume,
            episodes_per_shard=args.episodes_per_shard, max_episode_steps=args.max_episode_steps,
            env_kwargs=env_kwargs or None, masks=args.masks, deterministic_policy=args.deterministic_policy, compress=args.compress,
            progress=args.progress, crop=args.crop, gym_packages=args.gym_packages,
        )
    summary = {k: manifest[k] for k in ("env_id", "frame_shape", "has_masks", "num_shards", "num_episodes",
                                        "num_steps", "num_frames", "frame_pipeline", "rebuilt_from_shards",
                                        "left_out_shards") if k in manifest}
    print(json.dumps({"out": args.out, **summary}))
    return 0


if __name__ == "__main__":
    sys.exit(run_main(main))

"""Roll a trained PPO agent for K episodes, report its success rate and write an episode GIF.

    python agents/evaluate.py --run runs/ppo --episodes 50

Reads ``RUN/args.json`` and ``RUN/model.zip`` written by ``agents/train_ppo.py``. For a slot agent
the GIF shows each frame beside the PSB reconstruction and the slot masks (the streamed slots
decoded with ``model.decode``); for pixel / state agents it shows the frames.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import gymnasium as gym
import numpy as np
import torch

from psb_rl import agent_io
from psb_rl.cli import bounded, parse_dataclass, run_main
from psb_rl.utils import ensure_writable_file, resolve_device

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: agents/ is a folder of the
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repository root, not an installed module
from agents.train_ppo import Args as TrainArgs
from agents.train_ppo import load_encoder


@dataclass
class EvalArgs:
    """Evaluate a PPO agent trained by agents/train_ppo.py and save a GIF of one episode."""

    run: str | None = None
    """run folder of agents/train_ppo.py (holds args.json and model.zip)"""
    model: str | None = None
    """agent .zip (default: RUN/model.zip); its network is rebuilt from RUN/args.json (never unpickled)"""
    env: str | None = None
    """environment id (default: the run's)"""
    encoder: Literal["slots", "pixels", "state"] | None = None
    """slots, pixels or state (default: the run's)"""
    checkpoint: str | None = None
    """PSB checkpoint for --encoder slots (default: the run's)"""
    env_kwargs: str | None = None
    """extra gym.make keyword arguments as JSON (default: the run's)"""
    gym_packages: list[str] | None = None
    """packages to import that register --env (default: the run's)"""
    episodes: int = bounded(20, min=1)
    """number of evaluation episodes"""
    seed: int = bounded(100_000, min=0)
    """seed of the first episode (episode k uses seed + k)"""
    n_envs: int = bounded(8, min=1)
    """environments stepped together: one batched encoder and policy call per step (episode k still uses
    seed + k, so the episodes do not depend on it)"""
    deterministic: bool = True
    """greedy actions"""
    gif: str = "auto"
    """GIF of the first episode: a path, 'auto' (RUN/episode.gif, or next to --model) or 'none' to skip"""
    gif_max_steps: int = bounded(100, min=1)
    """at most this many steps in the GIF"""
    fps: float = bounded(8.0, gt=0)
    """GIF frames per second"""
    device: str = "cpu"
    """torch device: auto, cpu or cuda"""
    torch_threads: int | None = bounded(None, min=1)
    """torch CPU threads (None: torch's default)"""


def parse_args(argv: list[str] | None = None) -> EvalArgs:
    """:param argv: command-line arguments. :return: parsed :class:`EvalArgs`."""
    return parse_dataclass(EvalArgs, argv)


def run_train_args(args: EvalArgs) -> TrainArgs:
    """The training arguments of the run (``RUN/args.json``, else the one beside ``--model``), with the
    overrides of ``args``."""
    train = TrainArgs()
    run = args.run if args.run is not None else (str(Path(args.model).parent) if args.model else None)
    if run is not None and (Path(run) / "args.json").exists():
        saved = json.loads((Path(run) / "args.json").read_text())
        known = {f.name for f in dataclasses.fields(TrainArgs)}
        train = TrainArgs(**{k: v for k, v in saved.items() if k in known})
    overrides = {
        k: getattr(args, k) for k in ("env", "encoder", "checkpoint", "env_kwargs", "gym_packages")
        if getattr(args, k) is not None
    }
    return dataclasses.replace(train, **overrides)


def make_acting_env(train: TrainArgs, psb_model: torch.nn.Module | None = None) -> gym.Env:
    """One environment whose observations are what the agent's policy reads: the frames of the run's frame
    pipeline (slot and pixel agents; a slot agent's frames are streamed through its PSB encoder by
    :class:`psb_rl.agent_io.AgentPolicy`) or the env's own observations (state agents).

    :param psb_model: a slot agent's frozen PSB model, if already loaded (else read from ``train.checkpoint``):
        its frame pipeline makes the frames.
    """
    from agents.train_ppo import agent_env_kwargs, frame_pipeline
    from psb_rl.environments import FramePipelineObservation, make_frame_env, make_state_env

    checkpoint: Any = None
    if train.encoder == "slots":
        if not train.checkpoint:
            raise ValueError("a slot agent needs --checkpoint (or a run folder whose args.json names it)")
        checkpoint = psb_model if psb_model is not None else load_encoder(train, torch.device("cpu"))
    pipeline = frame_pipeline(train, checkpoint) if train.encoder != "state" else None
    kwargs = agent_env_kwargs(train, pipeline)  # the checkpoint's rendering options, then the run's --env-kwargs
    if train.encoder == "state":
        kwargs.setdefault("render_mode", "rgb_array")
        return make_state_env(train.env, kwargs, train.max_episode_steps, train.gym_packages)
    env = make_frame_env(train.env, pipeline.source, kwargs, train.max_episode_steps, train.gym_packages,
                         train.atari_wrappers)
    return FramePipelineObservation(env, pipeline)


def load_policy_and_envs(train: TrainArgs, model_path: Path, device: torch.device, n_envs: int,
                         deterministic: bool) -> tuple[agent_io.AgentPolicy, list[gym.Env]]:
    """The saved agent as a batched policy (loaded without unpickling, :func:`psb_rl.agent_io.load_agent`) and
    ``n_envs`` envs of its observation pipeline.

    A slot agent's checkpoint must be the one its run recorded (SHA-256 in ``args.json``).
    """
    from psb_rl.wrappers import slot_observation_space

    agent_io.verify_run_checkpoint(agent_io.read_run_record(model_path.parent), train.checkpoint,
                                   str(model_path.parent))
    agent_io.saved_num_timesteps(model_path)  # a clear error before the envs are built
    # without a checkpoint, make_acting_env says what a slot agent needs
    psb_model = load_encoder(train, device) if train.encoder == "slots" and train.checkpoint else None
    envs = [make_acting_env(train, psb_model) for _ in range(n_envs)]
    space = envs[0].observation_space
    if psb_model is not None:
        space = slot_observation_space(psb_model, agent_io.observed_geometry(train))
    elif train.encoder == "pixels":
        from stable_baselines3.common.vec_env import VecTransposeImage

        space = VecTransposeImage.transpose_space(space)
    acting = dataclasses.replace(train, mirror_from=None)  # a mirrored agent's weights are the plain network's
    agent = agent_io.load_agent(model_path, acting, device, (space, envs[0].action_space))
    policy = agent_io.AgentPolicy(agent, train.encoder, psb_model, deterministic, agent_io.observed_geometry(train))
    return policy, envs


def evaluate(args: EvalArgs) -> dict[str, Any]:
    """Roll the agent and write the GIF.

    :param args: evaluation arguments.
    :return: ``success_rate``, ``failure_rate`` (the env ended the episode without success, e.g. the
        agent touched a wrong object), ``timeout_rate`` (time limit), ``mean_reward``, ``std_reward``,
        ``mean_length``, ``episodes``, per-episode ``returns`` / ``lengths`` / ``successes`` and ``gif_path`` (None if
        skipped).
    """
    from psb_rl.environments import ensure_registered
    from psb_rl.utils import set_torch_threads

    set_torch_threads(args.torch_threads)
    train = run_train_args(args)
    ensure_registered(train.env, train.gym_packages)  # an unknown id fails here, naming the fix
    device = resolve_device(args.device)
    model_path = Path(args.model) if args.model else Path(args.run or ".") / "model.zip"
    if not model_path.exists():
        raise FileNotFoundError(f"no agent at {model_path}; pass --run RUN_DIR or --model PATH.zip")
    gif_arg = str(model_path.with_name("episode.gif")) if args.gif == "auto" else args.gif
    if gif_arg.lower() != "none":
        ensure_writable_file(gif_arg, "--gif")  # before the episodes, not after them
    n_envs = min(args.n_envs, args.episodes)
    policy, envs = load_policy_and_envs(train, model_path, device, n_envs, args.deterministic)

    returns = np.zeros(args.episodes)
    lengths = np.zeros(args.episodes, dtype=np.int64)
    timeouts = np.zeros(args.episodes)
    successes: dict[int, float] = {}
    frames: list[np.ndarray] = []  # episode 0 (env 0), for the GIF
    slots: list[np.ndarray] = []
    observations: list[Any] = [None] * n_envs
    episode_of = [-1] * n_envs  # which episode each env plays; -1: done, nothing left to start
    started = 0

    def start(i: int) -> None:
        nonlocal started
        episode_of[i] = started if started < args.episodes else -1
        if episode_of[i] >= 0:
            observations[i], _ = envs[i].reset(seed=args.seed + started)
            started += 1

    def record() -> None:
        if episode_of[0] != 0 or len(frames) >= args.gif_max_steps:
            return
        frame = observations[0] if train.encoder != "state" else envs[0].render()
        if frame is not None:
            frames.append(np.asarray(frame))
        if policy.last_slots is not None:
            slots.append(policy.last_slots[0])

    for i in range(n_envs):
        start(i)
    while any(episode >= 0 for episode in episode_of):
        # envs with nothing left to play repeat their last observation; their actions are ignored
        actions = policy(np.stack(observations))
        record()
        restarted = np.zeros(n_envs, dtype=bool)
        for i, episode in enumerate(episode_of):
            if episode < 0:
                continue
            observations[i], reward, terminated, truncated, info = envs[i].step(actions[i])
            returns[episode] += float(reward)
            lengths[episode] += 1
            if terminated or truncated:
                timeouts[episode] = float(truncated and not terminated)
                if "is_success" in info:
                    successes[episode] = float(info["is_success"])
                start(i)
                restarted[i] = True
        policy.reset(restarted)  # a slot agent forgets the finished episodes' frames

    gif_path = None
    if gif_arg.lower() != "none" and frames:
        gif_path = Path(gif_arg)
        from psb_rl import visualize

        if train.encoder == "slots":
            from psb_rl.preprocessing import preprocess_frames

            psb = policy.psb_model
            with torch.inference_mode():
                stream = torch.as_tensor(np.stack(slots), device=psb_device(psb))
                recon, masks, per_slot = psb.decode(stream)
                video = preprocess_frames(np.stack(frames), psb.config.image_size)
            visualize.save_slot_gif(
                gif_path, video.cpu(), recon.clamp(0, 1).cpu(), masks.cpu(), per_slot.clamp(0, 1).cpu(), fps=args.fps
            )
        else:
            visualize.save_gif(np.stack(frames).astype(np.uint8), gif_path, fps=args.fps)
    for env in envs:
        env.close()
    success_rate = float(np.mean(list(successes.values()))) if successes else float("nan")
    timeout_rate = float(np.mean(timeouts))
    return {
        "env": train.env,
        "encoder": train.encoder,
        "episodes": args.episodes,
        "success_rate": success_rate,
        "failure_rate": 1.0 - success_rate - timeout_rate if successes else float("nan"),
        "timeout_rate": timeout_rate,
        "mean_reward": float(np.mean(returns)),
        "std_reward": float(np.std(returns)),
        "mean_length": float(np.mean(lengths)),
        "returns": returns.tolist(),
        "lengths": lengths.tolist(),
        "successes": [successes[k] for k in sorted(successes)],
        "gif_path": str(gif_path) if gif_path else None,
    }


def psb_device(model: torch.nn.Module) -> torch.device:
    """Device of a model's weights."""
    return next(model.parameters()).device


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line, evaluate, print the result."""
    from psb_rl.environments import UnknownEnvError
    from psb_rl.frames import FramePipelineError

    try:
        result = evaluate(parse_args(argv))
    except (UnknownEnvError, FramePipelineError) as error:  # the env id or its frames: one line, exit 2
        print(f"error: {error}", file=sys.stderr)
        raise SystemExit(2) from None
    print(
        f"{result['encoder']} agent on {result['env']}: success rate {result['success_rate']:.3f} "
        f"over {result['episodes']} episodes (ended without success {result['failure_rate']:.3f}, time-outs "
        f"{result['timeout_rate']:.3f}), return {result['mean_reward']:.3f} ± {result['std_reward']:.3f}, "
        f"length {result['mean_length']:.1f}"
    )
    if result["gif_path"]:
        print(f"  episode GIF: {result['gif_path']}")
    return result


if __name__ == "__main__":
    sys.exit(run_main(main))

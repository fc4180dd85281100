"""Train PPO on object slots, raw pixels or ground-truth object states.

    python agents/train_ppo.py --env PSB/OddOneOut-v0 --encoder slots --checkpoint runs/psb/psb.ckpt
    python agents/train_ppo.py --env PSB/OddOneOut-v0 --encoder pixels      # NatureCNN on frames
    python agents/train_ppo.py --env PSB/OddOneOut-v0 --encoder state       # oracle objects
    python agents/train_ppo.py --env MiniGrid-DoorKey-5x5-v0 --encoder slots --checkpoint runs/doorkey/psb.ckpt
    python agents/train_ppo.py --env ALE/Pong-v5 --encoder pixels --crop 34 16 0 0 --resize 84

Any gymnasium id works (``--gym-packages PKG`` for ids that other packages register). Frames come from the
observations or from ``env.render()`` (``--pixels``; by default as the checkpoint's frame pipeline
recorded them) and go through the checkpoint's frame pipeline (:mod:`psb_rl.frames`), so the agent sees
them exactly as pretraining did; ``--crop`` / ``--resize`` override it. The envs are made with the rendering
options the checkpoint's frames were recorded with (e.g. MiniGrid's ``highlight=False``); ``--env-kwargs``
overrides them (``summary.json`` records the arguments the envs were made with). ALE games get the usual Atari
wrappers in RGB (:func:`psb_rl.environments.atari_wrappers`).

* ``slots``: frames are encoded by the frozen PSB checkpoint inside :class:`psb_rl.VecPSBWrapper`
  (one batched streaming step for all envs) and read by :class:`psb_rl.SlotTransformerExtractor`.
* ``pixels``: SB3's ``CnnPolicy`` (NatureCNN) on the raw frames.
* ``state``: the environment's ``obs_mode="state"`` objects ``(K, F)`` through the same extractor.

``--mirror-from STEPS`` trains, from that step on, also on the mirror images of each rollout
(:mod:`psb_rl.contrib.mirror`; built-in ``PSB/`` environments).

Writes to ``--out``: ``model.zip``, ``args.json``, ``eval.csv`` (timesteps, mean reward, success
rate), ``learning_curve.png``, ``summary.json`` and TensorBoard logs under ``tb/``. ``train(args)``
is importable (tests, ``pretrain/demo.py``, ``benchmarks/rl_oddoneout.py``).
"""

from __future__ import annotations

import csv
import dataclasses
import importlib.util
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import numpy as np
import torch
from stable_baselines3 import PPO
from stable_baselines3.common.callbacks import BaseCallback, CallbackList, EvalCallback
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.evaluation import evaluate_policy
from stable_baselines3.common.utils import set_random_seed
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv, VecEnv, VecTransposeImage

from psb_rl import agent_io
from psb_rl.agent_io import ENCODERS, build_agent, mirror_kwargs, policy_for, saved_num_timesteps  # noqa: F401
from psb_rl.cli import bounded, check_bounds, parse_dataclass, parse_env_kwargs, run_main
from psb_rl.utils import atomic_path, owned_run_dir, resolve_device, write_json

RUN_FILES = ("model.zip", "eval.csv", "evaluations.npz", "learning_curve.png", "summary.json", "tb")
"""What a run writes to --out: their presence means a (finished or partial) run is there (args.json, written
first, is not one: a run that failed before training left nothing to keep)."""


@dataclass
class Args:
    """Train PPO on object slots (PSB), raw pixels (NatureCNN) or ground-truth object states."""

    env: str = "PSB/OddOneOut-v0"
    """gymnasium id of the environment (the PSB/ ids are registered by ``import psb_rl``)"""
    encoder: Literal["slots", "pixels", "state"] = "slots"
    """observation pipeline: slots (frozen PSB + slot transformer), pixels (NatureCNN) or state (oracle objects)"""
    checkpoint: str | None = None
    """PSB checkpoint (``psb_rl.save_checkpoint``); required for --encoder slots"""
    n_envs: int = bounded(8, min=1)
    """number of parallel environments"""
    total_steps: int = bounded(200_000, min=1)
    """total environment steps of training (all envs together)"""
    seed: int = bounded(0, min=0)
    """seed of the environments, the policy and torch"""
    out: str = "runs/ppo"
    """output folder (model.zip, eval.csv, learning_curve.png, summary.json, tb/)"""
    device: str = "auto"
    """torch device of the policy and the encoder: auto, cpu or cuda"""
    eval_freq: int = bounded(20_000, min=0)
    """evaluate every this many environment steps (0 = only at the end)"""
    eval_episodes: int = bounded(20, min=1)
    """episodes per evaluation"""
    eval_deterministic: bool = True
    """evaluate the greedy policy (--no-eval-deterministic: sample actions, as PPO does while training; a
    policy that has not yet sharpened can loop forever when greedy, e.g. in MiniGrid)"""
    save_freq: int = bounded(100_000, min=0)
    """save the agent to OUT/model.zip (atomically) every this many environment steps, so a run that is
    stopped keeps its latest agent (continue it with --resume-from); 0 = only at the end"""
    vec_env: Literal["dummy", "subproc"] = "dummy"
    """dummy (in-process) or subproc (one process per env; torch stays in the main process)"""
    env_kwargs: str = "{}"
    """extra keyword arguments of gym.make, as JSON; they override the rendering options recorded in the
    checkpoint's frame pipeline (obs_mode is set from --encoder for PSB/ envs)"""
    gym_packages: list[str] = dataclasses.field(default_factory=list)
    """extra packages to import that register --env (as RL Zoo's --gym-packages)"""
    pixels: str = "auto"
    """frame source: obs (the observations), render (env.render() frames) or auto (the checkpoint's
    recorded source; for --encoder pixels, render when the observations are not images)"""
    crop: tuple[int, int, int, int] | None = bounded(None, min=0)
    """override the frame pipeline's crop: pixels cut off the top, bottom, left, right (default: the
    checkpoint's; none for pixels agents without a checkpoint)"""
    resize: list[int] | None = bounded(None, min=1)
    """override the frame pipeline's size: N (N x N) or H W (default: the checkpoint's)"""
    atari_wrappers: bool = True
    """ALE games: no-op starts, FIRE on reset, end of episode on a life loss, rewards clipped to their sign
    (frames stay RGB and unresized)"""
    max_episode_steps: int | None = bounded(None, min=1)
    """override the environment's time limit"""
    n_steps: int = bounded(128, min=1)
    """PPO: steps per env per rollout"""
    batch_size: int = bounded(256, min=2)
    """PPO: minibatch size"""
    n_epochs: int = bounded(4, min=1)
    """PPO: optimisation epochs per rollout"""
    learning_rate: float = bounded(3e-4, gt=0)
    """PPO: Adam learning rate"""
    anneal_lr: bool = False
    """PPO: decay the learning rate linearly from --learning-rate to 0 over --total-steps (CleanRL's
    default)"""
    gamma: float = bounded(0.99, min=0, max=1)
    """PPO: discount factor"""
    gae_lambda: float = bounded(0.95, min=0, max=1)
    """PPO: GAE lambda"""
    clip_range: float = bounded(0.2, gt=0)
    """PPO: clipping of the policy ratio"""
    ent_coef: float = bounded(0.01, min=0)
    """PPO: entropy bonus"""
    vf_coef: float = bounded(0.5, min=0)
    """PPO: value-loss weight"""
    max_grad_norm: float = bounded(0.5, gt=0)
    """PPO: gradient clipping"""
    features_dim: int = bounded(128, min=1)
    """slot extractor: output features"""
    pooling: Literal["transformer", "deepsets", "flatten"] = "transformer"
    """slot extractor: transformer, deepsets or flatten"""
    d_model: int = bounded(64, min=1)
    """slot extractor: width of the transformer"""
    num_layers: int = bounded(2, min=1)
    """slot extractor: transformer layers"""
    num_heads: int = bounded(4, min=1)
    """slot extractor: attention heads"""
    embed_layers: int = bounded(1, min=1, max=2)
    """slot extractor: per-slot embedding, 1 (linear) or 2 (two-layer MLP)"""
    relation: bool = False
    """slot extractor: add pairwise relation features (each slot compared with every other) before pooling"""
    share_extractor: bool = True
    """slot extractor: one extractor for the actor and the critic (SB3's default) or one each"""
    net_arch: list[int] | None = None
    """hidden layers of the policy and value heads on top of the features (None: SB3's default, two tanh
    layers of 64 for slots and state, none for pixels); --net-arch alone: none, the heads read the
    features directly as in SB3's CnnPolicy"""
    slot_geometry: bool = False
    """slots: append to each slot what it owns in the frame (share, centroid, spread, skew and mean colour of
    the foreground pixels its mask wins: psb_rl.PSBAutoencoder.slot_geometry)"""
    geometry_only: bool = False
    """slots: each slot's geometry (as --slot-geometry) in place of its vector: the agent reads where the slots
    are and what they look like, not the vectors themselves"""
    standardize: bool = False
    """slot extractor: standardise each feature of each slot index by the running mean and std of the first
    --standardize-samples observations (then fixed; saved with the agent)"""
    standardize_samples: int = bounded(100_000, min=1)
    """slot extractor: observations that --standardize estimates its statistics from"""
    mirror_from: int | None = bounded(None, min=0)
    """from this many environment steps on, also train on the left-right, up-down and 180-degree mirror
    images of every rollout (psb_rl.contrib.mirror; None: never). Built-in PSB/ envs only (their arena is
    symmetric); costs about 4x the PPO update and, for slots, the encoder (mirrors are encoded from the
    start so each has its own history). On OddOneOut use it after the initial plateau (150k-250k):
    from step 0 PPO stalls there"""
    resume_from: str | None = None
    """continue a saved agent (a model.zip of this script, trained with the same --encoder and network
    arguments) until --total-steps in all: weights and optimiser state are loaded without unpickling,
    episodes start afresh; the run folder's eval.csv rows are carried over"""
    overwrite: bool = False
    """replace the run already in --out (without it, an --out holding a run is refused unless
    --resume-from continues it)"""
    mask_feature_index: int | None = -1
    """state encoder: index of the ``present`` feature used to mask padded objects (None: no mask)"""
    torch_threads: int | None = bounded(None, min=1)
    """torch CPU threads (None: torch's default)"""
    tensorboard: bool = True
    """write TensorBoard logs to OUT/tb"""
    progress_bar: bool = True
    """show a progress bar"""
    verbose: int = bounded(0, min=0, max=2)
    """SB3 verbosity (0, 1, 2)"""

    def validate(self) -> None:
        """Refuse combinations of values no run can use (the parser calls this after the per-option bounds).

        :raises ValueError: naming the options.
        """
        if self.n_steps * self.n_envs < 2:
            raise ValueError(f"--n-steps {self.n_steps} x --n-envs {self.n_envs} must be >= 2 (PPO's rollout buffer)")


# ----------------------------------------------------------------------------------------------------
# command line


def parse_args(argv: list[str] | None = None) -> Args:
    """:param argv: command-line arguments (default ``sys.argv[1:]``). :return: the parsed :class:`Args`."""
    return parse_dataclass(Args, argv)


# ----------------------------------------------------------------------------------------------------
# environments


def frame_source(args: Args, encoder_model: torch.nn.Module | None = None) -> str:
    """Where frames come from: ``"observation"`` or ``"render"`` (``--pixels``; auto: the checkpoint's
    recorded source, or for pixels agents ``render`` when the observations are not images)."""
    if args.pixels not in ("auto", "obs", "render"):
        raise ValueError(f"--pixels must be auto, obs or render, got {args.pixels!r}")
    if args.pixels != "auto":
        return "render" if args.pixels == "render" else "observation"
    if encoder_model is not None:
        from psb_rl.frames import model_frame_pipeline

        return model_frame_pipeline(encoder_model).source
    if args.checkpoint:
        from psb_rl.checkpoint import read_checkpoint
        from psb_rl.frames import pipeline_for_model

        return pipeline_for_model(read_checkpoint(args.checkpoint)[1]).source
    if args.encoder != "pixels" or args.env.startswith("PSB/"):
        return "observation"
    from psb_rl.environments import make_env as make_one_env
    from psb_rl.wrappers import _is_image_space

    probe = make_one_env(args.env, parse_env_kwargs(args.env_kwargs), gym_packages=args.gym_packages)
    try:
        return "observation" if _is_image_space(probe.observation_space) else "render"
    finally:
        probe.close()


def frame_pipeline(args: Args, encoder_model: torch.nn.Module | None = None) -> Any:
    """The frame pipeline of the agent's frames: the checkpoint's (also for pixels agents given
    ``--checkpoint``; else none), with ``--crop`` / ``--resize`` and the source of ``--pixels`` applied. :return: a :class:`psb_rl.frames.FramePipeline`."""
    from psb_rl.frames import FramePipeline, model_frame_pipeline, size_from_flag

    if encoder_model is not None:
        base = model_frame_pipeline(encoder_model)
    elif args.checkpoint:  # a pixels agent given a checkpoint sees the frames that model was trained on
        from psb_rl.checkpoint import read_checkpoint
        from psb_rl.frames import pipeline_for_model

        base = pipeline_for_model(read_checkpoint(args.checkpoint)[1])
    else:
        base = FramePipeline()
    changes: dict[str, Any] = {"source": frame_source(args, encoder_model)}
    if args.crop is not None:
        changes["crop"] = tuple(args.crop)
    if args.resize:
        changes["size"] = size_from_flag(args.resize)
    return dataclasses.replace(base, **changes)


def agent_env_kwargs(args: Args, pipeline: Any = None) -> dict[str, Any]:
    """The ``gym.make`` arguments of the agent's envs: the rendering options the checkpoint's frames were
    recorded with (``pipeline.env_kwargs``, e.g. MiniGrid's ``highlight=False``), the built-in envs' ``obs_mode``
    for ``--encoder``, then ``--env-kwargs``, which override both.

    :param args: run arguments. :param pipeline: the agent's frame pipeline (None: state agents).
    """
    kwargs: dict[str, Any] = dict(getattr(pipeline, "env_kwargs", None) or {})
    if args.env.startswith("PSB/"):
        kwargs["obs_mode"] = "state" if args.encoder == "state" else "pixels"
    kwargs.update(parse_env_kwargs(args.env_kwargs))
    return kwargs


def make_env(args: Args, n_envs: int, seed: int, encoder_model: torch.nn.Module | None = None) -> VecEnv:
    """The vectorised environment for ``args.encoder``.

    :param args: run arguments (env, encoder, vec_env, env_kwargs, device, frame pipeline options); the envs are
        made with :func:`agent_env_kwargs`.
    :param n_envs: number of parallel environments.
    :param seed: seed of the first env (env i gets ``seed + i``).
    :param encoder_model: the frozen PSB model (``--encoder slots``), shared by train and eval envs.
    :return: a VecEnv whose observations are slots ``(B, N, D)``, frames ``(B, 3, H, W)`` or objects ``(B, K, F)``.
    """
    import functools

    from psb_rl.environments import make_frame_env, make_state_env
    from psb_rl.frames import FramePipelineError

    env_id = args.env
    if env_id.startswith("PSB/"):
        env_id = "psb_rl:" + env_id  # worker processes import the package themselves
    if args.vec_env not in ("dummy", "subproc"):
        raise ValueError(f"--vec-env must be dummy or subproc, got {args.vec_env!r}")
    vec_env_cls = SubprocVecEnv if args.vec_env == "subproc" and n_envs > 1 else DummyVecEnv
    pipeline = frame_pipeline(args, encoder_model) if args.encoder != "state" else None
    env_kwargs = agent_env_kwargs(args, pipeline)
    if args.encoder == "state":
        one_env = functools.partial(make_state_env, env_id, env_kwargs, args.max_episode_steps, tuple(args.gym_packages))
        make_state_env(*one_env.args).close()  # an env without object states fails here, in one line
    else:
        one_env = functools.partial(make_frame_env, env_id, pipeline.source, env_kwargs, args.max_episode_steps,
                                    tuple(args.gym_packages), args.atari_wrappers)
    if args.encoder == "pixels":
        one_env = functools.partial(_pipeline_env, one_env, pipeline)
    venv = make_vec_env(one_env, n_envs=n_envs, seed=seed, vec_env_cls=vec_env_cls)
    if args.encoder == "pixels" and min(venv.observation_space.shape[:2]) < 36:
        venv.close()
        raise FramePipelineError(
            f"--encoder pixels: frames of {venv.observation_space.shape[0]}x{venv.observation_space.shape[1]} are "
            "too small for the NatureCNN (at least 36x36); pass --resize 84 (or another size of at least 36)"
        )
    if args.encoder == "slots":
        from psb_rl.wrappers import VecPSBWrapper

        if encoder_model is None:
            raise ValueError("--encoder slots needs the PSB model (load it with psb_rl.load_checkpoint)")
        if args.mirror_from is not None:
            from psb_rl.contrib.mirror import MirroredVecPSBWrapper

            if agent_io.observed_geometry(args):
                raise ValueError("--mirror-from mirrors slot vectors only; it cannot be combined with --slot-geometry "
                                 "or --geometry-only")

            return MirroredVecPSBWrapper(venv, checkpoint=encoder_model)  # type: ignore[arg-type]
        # PPO reads a terminal observation only to bootstrap an episode cut by the time limit
        return VecPSBWrapper(venv, checkpoint=encoder_model, frame_pipeline=pipeline,  # type: ignore[arg-type]
                             geometry=agent_io.observed_geometry(args), terminal_observations="truncated")
    if args.encoder == "pixels":
        return VecTransposeImage(venv)
    return venv


def _pipeline_env(make: Any, pipeline: Any) -> Any:
    """One env of ``make()`` whose observations went through ``pipeline`` (pixels agents)."""
    from psb_rl.environments import FramePipelineObservation

    return FramePipelineObservation(make(), pipeline)


def load_encoder(args: Args, device: torch.device | None = None) -> torch.nn.Module | None:
    """The frozen PSB model for ``--encoder slots`` (None otherwise), on ``device`` (default ``args.device``)."""
    if args.encoder != "slots":
        return None
    if not args.checkpoint:
        raise ValueError("--encoder slots needs --checkpoint PATH (a PSB checkpoint from pretrain/train_psb.py)")
    from psb_rl.wrappers import load_frozen_encoder

    return load_frozen_encoder(args.checkpoint, device if device is not None else resolve_device(args.device))


# ----------------------------------------------------------------------------------------------------
# the agent: built from the arguments, loaded without unpickling


def mark_tensorboard_restart(tb_dir: Path, log_name: str, step: int) -> None:
    """Write TensorBoard's restart marker at ``step`` into the folder a continued SB3 run logs in.

    SB3 continues a run (``reset_num_timesteps=False``) in its latest ``<log_name>_<id>`` folder, from the
    saved agent's step; the interrupted run may have logged past that step. TensorBoard drops the earlier
    events at or after a restart marker, so no step is shown twice.

    :param tb_dir: the run's TensorBoard folder. :param log_name: SB3's ``tb_log_name``.
    :param step: the saved agent's number of timesteps (where logging resumes).
    """
    from stable_baselines3.common.utils import get_latest_run_id
    from torch.utils.tensorboard import SummaryWriter

    run_id = get_latest_run_id(str(tb_dir), log_name)
    if run_id > 0:  # none: the continued run logs in a new folder, there is nothing to hide
        SummaryWriter(str(tb_dir / f"{log_name}_{run_id}"), purge_step=step).close()


def load_agent(
    model_path: str | Path,
    args: Args,
    device: torch.device,
    venv: VecEnv | None = None,
    tensorboard_log: Path | None = None,
    encoder_model: torch.nn.Module | None = None,
) -> PPO:
    """Rebuild a saved agent from its run arguments and load its weights and optimiser state, without
    unpickling (see :func:`psb_rl.agent_io.load_agent`).

    :param model_path: ``model.zip`` written by :func:`train`.
    :param args: the arguments of the run that saved it (network and encoder must match).
    :param device: torch device of the policy.
    :param venv: environment to continue training on (default: one env of the run's pipeline, enough
        for ``predict``).
    :param tensorboard_log: TensorBoard folder of a continued run.
    :param encoder_model: the frozen PSB model of a slot agent, if already loaded (else read from
        ``args.checkpoint`` when ``venv`` is None).
    :return: the agent, with ``num_timesteps`` of the saved one.
    """
    saved_num_timesteps(model_path)  # a clear error before any environment is built
    if venv is None:
        # acting needs no mirrors: a mirrored agent's weights are those of the plain network
        args = dataclasses.replace(args, mirror_from=None)
        encoder_model = encoder_model if encoder_model is not None else load_encoder(args)
        venv = make_env(dataclasses.replace(args, vec_env="dummy"), 1, args.seed, encoder_model)
    return agent_io.load_agent(model_path, args, device, venv, tensorboard_log)


def earlier_eval_rows(csv_path: Path, up_to_steps: int) -> list[dict[str, float]]:
    """Rows of a previous run's ``eval.csv`` up to ``up_to_steps`` (none if the file is missing)."""
    if not csv_path.is_file():
        return []
    with csv_path.open(newline="") as f:
        rows = [
            {"timesteps": int(r["timesteps"]), "mean_reward": float(r["mean_reward"]), "success_rate": float(r["success_rate"])}
            for r in csv.DictReader(f)
        ]
    return [r for r in rows if r["timesteps"] <= up_to_steps]


# ----------------------------------------------------------------------------------------------------
# callbacks and evaluation


class TqdmCallback(BaseCallback):
    """A tqdm progress bar over environment steps (SB3's ``progress_bar=True`` needs ``rich``)."""

    def __init__(self, total: int) -> None:
        super().__init__()
        self.total = total
        self.bar: Any = None

    def _on_training_start(self) -> None:
        from tqdm.auto import tqdm

        self.bar = tqdm(total=self.total, unit="step", dynamic_ncols=True)

    def _on_step(self) -> bool:
        self.bar.n = min(self.num_timesteps, self.total)
        self.bar.refresh()
        return True

    def _on_training_end(self) -> None:
        if self.bar is not None:
            self.bar.close()


class SaveCallback(BaseCallback):
    """Save the agent atomically to ``path`` every ``save_freq`` environment steps."""

    def __init__(self, path: Path, save_freq: int) -> None:
        super().__init__()
        self.path, self.save_freq = path, save_freq
        self.last_saved = 0

    def _on_training_start(self) -> None:
        self.last_saved = self.num_timesteps

    def _on_step(self) -> bool:
        if self.num_timesteps - self.last_saved >= self.save_freq:
            with atomic_path(self.path, suffix=".zip") as tmp:
                self.model.save(tmp)
            self.last_saved = self.num_timesteps
        return True


def evaluate_agent(model: PPO, venv: VecEnv, n_episodes: int, deterministic: bool = True) -> dict[str, float]:
    """Roll ``n_episodes`` episodes and report returns and success rate.

    :param model: a trained agent. :param venv: environment with the agent's observation pipeline.
    :param n_episodes: episodes to roll. :param deterministic: greedy actions.
    :return: ``mean_reward``, ``std_reward``, ``mean_length``, ``success_rate`` (NaN if the env reports none).
    """
    successes: list[float] = []

    def record(locals_: dict[str, Any], _globals: dict[str, Any]) -> None:
        if locals_["done"] and "is_success" in locals_["info"]:
            successes.append(float(locals_["info"]["is_success"]))

    rewards, lengths = evaluate_policy(
        model, venv, n_eval_episodes=n_episodes, deterministic=deterministic, return_episode_rewards=True,
        callback=record, warn=False,
    )
    return {
        "mean_reward": float(np.mean(rewards)),
        "std_reward": float(np.std(rewards)),
        "mean_length": float(np.mean(lengths)),
        "success_rate": float(np.mean(successes)) if successes else float("nan"),
    }


def save_curve(path: Path, rows: list[dict[str, float]], title: str) -> Path:
    """Learning curve PNG (mean eval reward and success rate vs. environment steps)."""
    xs = [r["timesteps"] for r in rows]
    curves = {"mean reward": [r["mean_reward"] for r in rows], "success rate": [r["success_rate"] for r in rows]}
    from psb_rl.visualize import save_curve_png

    save_curve_png(path, xs, curves, title, "environment steps", "evaluation")
    return path


# ----------------------------------------------------------------------------------------------------
# training


def train(args: Args) -> dict[str, Any]:
    """Train PPO as described by ``args`` and write the run folder.

    The folder is owned while the run writes (``OUT/.lock``); a folder that holds a run already is
    refused unless ``--resume-from`` continues it or ``--overwrite`` replaces it.

    :param args: run arguments.
    :return: ``success_rate`` / ``mean_reward`` of the final evaluation, ``timesteps``, ``train_time_s``,
        ``curve`` (list of eval rows) and the paths written: ``out_dir``, ``model_path``, ``csv_path``,
        ``curve_path``, ``summary_path``, ``args_path``, ``tensorboard_dir`` (None if disabled).
    :raises psb_rl.utils.RunDirError: the folder is in use, holds a run, or cannot be written.
    :raises psb_rl.checkpoint.CheckpointError: ``--resume-from`` an agent trained with another checkpoint.
    """
    if args.encoder not in ENCODERS:
        raise ValueError(f"--encoder must be one of {ENCODERS}, got {args.encoder!r}")
    if args.encoder == "slots" and not args.checkpoint:
        raise ValueError("--encoder slots needs --checkpoint PATH (a PSB checkpoint from pretrain/train_psb.py)")
    check_bounds(args)  # for arguments made in Python (the parser checks them on the command line)
    args.validate()
    from psb_rl.environments import ensure_registered

    ensure_registered(args.env, args.gym_packages)  # an unknown id fails here, naming the fix
    if args.resume_from:
        source = Path(args.resume_from).parent
        record = agent_io.read_run_record(source) if Path(args.resume_from).is_file() else None
        differing = agent_io.network_mismatches(args, record)
        if differing:
            raise ValueError(f"cannot continue {args.resume_from}: {'; '.join(differing)}. Pass the arguments of the "
                             "run that saved it (its args.json).")
        agent_io.verify_run_checkpoint(record, args.checkpoint, str(source))
    with owned_run_dir(args.out, RUN_FILES, resume=bool(args.resume_from), overwrite=args.overwrite,
                       resume_flag="--resume-from OUT/model.zip", start_files=("args.json",)):
        return _train(args)


def _train(args: Args) -> dict[str, Any]:
    """:func:`train` once the run folder is owned."""
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    out = Path(args.out)
    set_random_seed(args.seed)
    device = resolve_device(args.device)

    steps_before = saved_num_timesteps(args.resume_from) if args.resume_from else 0
    if steps_before >= args.total_steps:
        raise ValueError(
            f"the agent at {args.resume_from} has already trained {steps_before} steps; "
            f"raise --total-steps above that to continue it"
        )
    encoder_model = load_encoder(args)
    # a resumed run starts new episodes: seeds the first part has not used
    venv = make_env(args, args.n_envs, args.seed + steps_before, encoder_model)
    n_eval_envs = max(1, min(args.n_envs, args.eval_episodes, 8))
    eval_env = make_env(
        dataclasses.replace(args, vec_env="dummy"), n_eval_envs, args.seed + 10_000, encoder_model
    )
    tb_dir = out / "tb" if args.tensorboard else None
    if args.resume_from:
        model = load_agent(args.resume_from, args, device, venv, tensorboard_log=tb_dir)
    else:
        model = build_agent(args, venv, device, tensorboard_log=tb_dir)
    # written once the agent is built: a resume that fails keeps the record of the run it would continue
    write_json(out / "args.json", agent_io.run_record(args))

    callbacks: list[BaseCallback] = []
    eval_callback = None
    if args.eval_freq > 0:
        eval_callback = EvalCallback(
            eval_env,
            n_eval_episodes=args.eval_episodes,
            eval_freq=max(args.eval_freq // args.n_envs, 1),
            log_path=str(out),
            deterministic=args.eval_deterministic,
            verbose=0,
        )
        callbacks.append(eval_callback)
    model_path = out / "model.zip"
    if args.save_freq > 0:
        callbacks.append(SaveCallback(model_path, args.save_freq))
    use_rich = importlib.util.find_spec("rich") is not None
    if args.progress_bar and not use_rich:
        callbacks.append(TqdmCallback(args.total_steps))
    if args.resume_from and tb_dir is not None:
        mark_tensorboard_restart(tb_dir, f"ppo_{args.encoder}", steps_before)
    start = time.perf_counter()
    model.learn(
        total_timesteps=args.total_steps - steps_before,
        callback=CallbackList(callbacks),
        tb_log_name=f"ppo_{args.encoder}",
        reset_num_timesteps=not args.resume_from,
        progress_bar=args.progress_bar and use_rich,
    )
    train_time = time.perf_counter() - start

    rows = earlier_eval_rows(Path(args.resume_from).parent / "eval.csv", steps_before) if args.resume_from else []
    if eval_callback is not None:
        for i, steps in enumerate(eval_callback.evaluations_timesteps):
            succ = eval_callback.evaluations_successes[i] if i < len(eval_callback.evaluations_successes) else []
            rows.append(
                {
                    "timesteps": int(steps),
                    "mean_reward": float(np.mean(eval_callback.evaluations_results[i])),
                    "success_rate": float(np.mean(succ)) if len(succ) else float("nan"),
                }
            )
    final = evaluate_agent(model, eval_env, args.eval_episodes, deterministic=args.eval_deterministic)
    if not rows or rows[-1]["timesteps"] != model.num_timesteps:
        rows.append(
            {"timesteps": int(model.num_timesteps), "mean_reward": final["mean_reward"], "success_rate": final["success_rate"]}
        )

    # atomic: a full disk or a kill mid-write leaves the previous agent (maybe the one resumed) intact
    with atomic_path(model_path, suffix=".zip") as tmp:
        model.save(tmp)
    csv_path = out / "eval.csv"
    with atomic_path(csv_path) as tmp, tmp.open("w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=["timesteps", "mean_reward", "success_rate"])
        writer.writeheader()
        writer.writerows(rows)
    curve_path = save_curve(out / "learning_curve.png", rows, f"PPO ({args.encoder}) on {args.env}")
    summary: dict[str, Any] = {
        "env": args.env,
        "env_kwargs": agent_env_kwargs(args, frame_pipeline(args, encoder_model) if args.encoder != "state" else None),
        "encoder": args.encoder,
        "seed": args.seed,
        "timesteps": int(model.num_timesteps),
        "resumed_from_steps": steps_before,
        "train_time_s": train_time,
        "env_steps_per_s": (model.num_timesteps - steps_before) / max(train_time, 1e-9),
        **final,
        "curve": rows,
        "out_dir": str(out),
        "model_path": str(model_path),
        "csv_path": str(csv_path),
        "curve_path": str(curve_path),
        "args_path": str(out / "args.json"),
        "tensorboard_dir": str(tb_dir) if tb_dir else None,
    }
    summary_path = out / "summary.json"
    summary["summary_path"] = str(summary_path)
    write_json(summary_path, summary)
    venv.close()
    eval_env.close()
    return summary


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Parse the command line, train, print where the results are (``run_main(main)`` turns user
    mistakes into one ``error:`` line and exit code 2)."""
    args = parse_args(argv)
    result = train(args)
    print(
        f"{args.encoder} on {args.env}: success rate {result['success_rate']:.3f}, "
        f"mean reward {result['mean_reward']:.3f} after {result['timesteps']} steps "
        f"({result['env_steps_per_s']:.0f} steps/s)"
    )
    for key in ("model_path", "csv_path", "curve_path", "summary_path", "tensorboard_dir"):
        print(f"  {key}: {result[key]}")
    return result


if __name__ == "__main__":
    sys.exit(run_main(main))

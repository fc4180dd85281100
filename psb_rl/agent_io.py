"""Build and load the PPO agents of ``agents/train_ppo.py`` without unpickling anything.

stable-baselines3's ``PPO.load`` unpickles (cloudpickle) objects stored in the agent's zip, which can
run arbitrary code. Here an agent is rebuilt from the arguments of the run that trained it (its
``args.json``) and only tensors (``torch.load(weights_only=True)``) and the step count (JSON) are read
from the zip. The same function serves evaluation, continued training and rollout collection.

A run's ``args.json`` holds its arguments plus, for a slot agent, the SHA-256 and config of its PSB
checkpoint (:func:`checkpoint_record`): loading the agent with another checkpoint is an error.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pickle
import types
import warnings
import zipfile
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch

ENCODERS = ("slots", "pixels", "state")
RUN_ARGS_NAME = "args.json"


class AgentLoadError(ValueError):
    """A saved agent cannot be loaded safely (not one of this project's, or its run is inconsistent)."""


# ----------------------------------------------------------------------------------------------------
# building the network from the run's arguments


def policy_for(args: Any) -> tuple[str, dict[str, Any]]:
    """SB3 policy name and ``policy_kwargs`` for ``args.encoder`` (``args``: the run's arguments)."""
    heads = {} if args.net_arch is None else {"net_arch": list(args.net_arch)}
    if args.encoder == "pixels":
        return "CnnPolicy", heads
    from psb_rl.extractors import SlotTransformerExtractor

    kwargs: dict[str, Any] = {
        "features_dim": args.features_dim,
        "pooling": args.pooling,
        "d_model": args.d_model,
        "num_layers": args.num_layers,
        "num_heads": args.num_heads,
        "embed_layers": args.embed_layers,
        "relation": args.relation,
        "standardize": args.standardize,
        "standardize_samples": args.standardize_samples,
    }
    if args.encoder == "state":
        kwargs["mask_feature_index"] = args.mask_feature_index
    extractor_class: type = SlotTransformerExtractor
    if args.encoder == "slots" and args.mirror_from is not None:
        from psb_rl.contrib.mirror import FirstCopyExtractor

        extractor_class = FirstCopyExtractor  # same parameters, reads the unmirrored copy
    return "MlpPolicy", {
        **heads,
        "features_extractor_class": extractor_class,
        "features_extractor_kwargs": kwargs,
        "share_features_extractor": args.share_extractor,
    }


def mirror_kwargs(args: Any) -> dict[str, Any]:
    """Keyword arguments of :class:`psb_rl.contrib.mirror.MirroredPPO` for ``--mirror-from`` (empty without it)."""
    if args.mirror_from is None:
        return {}
    if not args.env.startswith("PSB/"):
        raise ValueError(
            f"--mirror-from needs an environment symmetric under mirrors with the built-in action set; "
            f"it supports the PSB/ environments, got {args.env!r}"
        )
    import functools

    from psb_rl.contrib import mirror

    observation_mirror: mirror.ObservationMirror
    if args.encoder == "slots":
        observation_mirror = functools.partial(mirror.select_copy, mirrors=tuple(mirror.MIRRORS))
    elif args.encoder == "state":
        observation_mirror = mirror.mirror_state
    else:  # VecTransposeImage frames (..., 3, H, W)
        observation_mirror = functools.partial(mirror.mirror_frames, channels_last=False)
    return {"mirror_from": args.mirror_from, "observation_mirror": observation_mirror}


class _SpacesEnv(gym.Env):
    """An environment that only declares spaces: enough to build an agent that acts via ``predict``."""

    def __init__(self, observation_space: gym.Space, action_space: gym.Space) -> None:
        self.observation_space, self.action_space = observation_space, action_space

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None) -> tuple[Any, dict]:
        return self.observation_space.sample(), {}

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict]:
        return self.observation_space.sample(), 0.0, True, False, {}


def build_agent(args: Any, env: Any, device: torch.device | str, tensorboard_log: Path | None = None) -> Any:
    """A fresh PPO agent (:class:`psb_rl.contrib.mirror.MirroredPPO` with ``mirror_from``) with the hyperparameters
    and network of ``args``.

    :param args: the run's arguments (``agents/train_ppo.py``'s ``Args`` or an object with its fields).
    :param env: a VecEnv to train on, or ``(observation_space, action_space)`` for an agent that only acts.
    :param device: torch device of the policy.
    :param tensorboard_log: TensorBoard folder.
    """
    from stable_baselines3 import PPO
    from stable_baselines3.common.utils import LinearSchedule

    if isinstance(env, tuple):
        env = _SpacesEnv(*env)
    policy, policy_kwargs = policy_for(args)
    extra = mirror_kwargs(args)
    agent_class: type = PPO
    if extra:
        from psb_rl.contrib.mirror import MirroredPPO

        agent_class = MirroredPPO
    return agent_class(
        policy,
        env,
        n_steps=args.n_steps,
        batch_size=args.batch_size,
        n_epochs=args.n_epochs,
        learning_rate=LinearSchedule(args.learning_rate, 0.0, 1.0) if args.anneal_lr else args.learning_rate,
        gamma=args.gamma,
        gae_lambda=args.gae_lambda,
        clip_range=args.clip_range,
        ent_coef=args.ent_coef,
        vf_coef=args.vf_coef,
        max_grad_norm=args.max_grad_norm,
        policy_kwargs=policy_kwargs,
        tensorboard_log=str(tensorboard_log) if tensorboard_log else None,
        seed=args.seed,
        device=device,
        verbose=args.verbose,
        **extra,
    )


# ----------------------------------------------------------------------------------------------------
# loading


def saved_num_timesteps(model_path: str | os.PathLike) -> int:
    """Environment steps a saved agent has trained, read from the plain-JSON part of its zip."""
    if not Path(model_path).is_file():
        raise FileNotFoundError(f"no agent at {model_path}; pass the model.zip written by agents/train_ppo.py")
    try:
        with zipfile.ZipFile(model_path) as archive:
            data = json.loads(archive.read("data"))
        return int(data["num_timesteps"])
    except (zipfile.BadZipFile, KeyError, ValueError) as err:
        raise ValueError(f"{model_path} is not an agent saved by agents/train_ppo.py (SB3 zip): {err}") from err


def load_agent(model_path: str | os.PathLike, args: Any, device: torch.device | str, env: Any,
               tensorboard_log: Path | None = None) -> Any:
    """Rebuild a saved agent from its run's arguments and load its weights and optimiser state.

    Nothing is unpickled: the network is built from ``args`` and only tensors
    (``torch.load(weights_only=True)``, through SB3's ``set_parameters``) and the step count (JSON)
    are read from the zip.

    :param model_path: ``model.zip`` written by ``agents/train_ppo.py``.
    :param args: the arguments of the run that saved it (network and encoder must match).
    :param device: torch device of the policy.
    :param env: the VecEnv to continue training on, or ``(observation_space, action_space)`` to act.
    :param tensorboard_log: TensorBoard folder of a continued run.
    :return: the agent, with ``num_timesteps`` of the saved one.
    :raises ValueError: when the zip is not such an agent or does not fit the network of ``args``.
    """
    num_timesteps = saved_num_timesteps(model_path)  # also checks that it is an agent's zip
    with warnings.catch_warnings():
        # one env for predict() makes SB3 warn that the rollout buffer is not a multiple of the batch
        warnings.filterwarnings("ignore", message=".*mini-batch size.*")
        agent = build_agent(args, env, device, tensorboard_log)
    try:
        with warnings.catch_warnings():
            # torch's weights-only reader warns about a foreign pickle protocol before refusing the file
            warnings.filterwarnings("ignore", message=".*pickle protocol.*")
            agent.set_parameters(str(model_path), exact_match=True, device=device)
    except (pickle.UnpicklingError, zipfile.BadZipFile, KeyError, EOFError) as err:
        # torch's own message would suggest weights_only=False, i.e. running the code the file holds: not shown
        raise ValueError(
            f"{model_path} holds parts that are not plain tensors, which are never unpickled ({type(err).__name__}); "
            "use an agent saved by agents/train_ppo.py"
        ) from None
    except (RuntimeError, ValueError) as err:
        detail = next((line.strip() for line in str(err).splitlines() if "size mismatch" in line), str(err)[:300])
        raise ValueError(
            f"the agent at {model_path} does not fit a network built from these arguments "
            f"(encoder {args.encoder!r}, pooling {args.pooling!r}, d_model {args.d_model}, ...): pass the "
            f"arguments of the run that saved it (its args.json). Details: {detail}"
        ) from err
    agent.num_timesteps = num_timesteps
    return agent


def read_run_record(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The ``args.json`` of a run folder (arguments plus checkpoint provenance), or None without one."""
    path = Path(run_dir) / RUN_ARGS_NAME
    if not path.is_file():
        return None
    try:
        record = json.loads(path.read_text())
    except ValueError as err:
        raise AgentLoadError(f"{path} is not valid JSON ({err}); the run folder is damaged") from None
    if not isinstance(record, dict):
        raise AgentLoadError(f"{path} does not hold a JSON object of run arguments")
    return record


def checkpoint_record(checkpoint: str | os.PathLike) -> dict[str, Any]:
    """What a PPO run records about its PSB checkpoint: ``checkpoint_sha256`` and ``checkpoint_config``."""
    from psb_rl.checkpoint import file_sha256, read_checkpoint

    _, info = read_checkpoint(checkpoint)  # also verifies the file
    return {"checkpoint_sha256": file_sha256(checkpoint), "checkpoint_config": info["config"]}


NETWORK_FIELDS = ("encoder", "features_dim", "pooling", "d_model", "num_layers", "num_heads", "embed_layers",
                  "relation", "share_extractor", "mask_feature_index", "slot_geometry", "geometry_only", "standardize",
                  "net_arch")
"""Arguments that shape an agent's network: a continued agent must keep them."""


NETWORK_DEFAULTS = {"slot_geometry": False, "geometry_only": False, "standardize": False,
                    "standardize_samples": 100_000, "net_arch": None}
"""Values of network arguments that runs recorded before those arguments existed."""


def observed_geometry(args: Any) -> bool | str:
    """What a slot agent's observation holds per slot (``geometry`` of :class:`psb_rl.VecPSBWrapper`), from
    its run's arguments: ``"only"`` with ``--geometry-only``, else whether ``--slot-geometry`` was given.

    :param args: the run's arguments (``agents/train_ppo.py``'s ``Args`` or its recorded ``args.json``).
    """
    if getattr(args, "geometry_only", False):
        return "only"
    return bool(getattr(args, "slot_geometry", False))


def network_mismatches(args: Any, record: dict[str, Any] | None) -> list[str]:
    """The network arguments of ``args`` that differ from those of the run ``record`` (its args.json).

    :return: lines such as ``"--d-model 64 differs from the run's 32"``.
    """
    if not record:
        return []
    recorded = {**NETWORK_DEFAULTS, **record}  # a run recorded before a field existed had its default
    return [f"--{name.replace('_', '-')} {getattr(args, name)} differs from the run's {recorded[name]}"
            for name in NETWORK_FIELDS
            if name in recorded and hasattr(args, name) and getattr(args, name) != recorded[name]]


def verify_run_checkpoint(record: dict[str, Any] | None, checkpoint: str | os.PathLike | None, run: str) -> None:
    """Check that ``checkpoint`` is the PSB checkpoint the run ``record`` (its args.json) was trained with.

    :raises psb_rl.checkpoint.CheckpointError: naming both files when they differ.
    """
    from psb_rl.checkpoint import verify_checkpoint_identity

    if record and checkpoint and record.get("encoder") == "slots":
        verify_checkpoint_identity(checkpoint, record.get("checkpoint_sha256"), record.get("checkpoint"),
                                   owner=f"the agent in {run}")


class AgentPolicy:
    """A loaded agent as a batched policy ``observations (B, ...) -> actions (B, ...)`` of raw env
    observations: a slot agent streams the frames through its PSB encoder, a pixel agent sees them
    channels-first, a state agent as they are.

    Call :meth:`reset` with the envs that start a new episode, so a slot agent forgets their history.

    :param agent: the loaded PPO agent.
    :param encoder: ``"slots"``, ``"pixels"`` or ``"state"``.
    :param psb_model: the frozen PSB model of a slot agent.
    :param deterministic: greedy actions.
    :param slot_geometry: what the slot agent observes per slot (``geometry`` of :class:`psb_rl.VecPSBWrapper`;
        its run's :func:`observed_geometry`).
    """

    def __init__(self, agent: Any, encoder: str, psb_model: torch.nn.Module | None = None,
                 deterministic: bool = False, slot_geometry: bool | str = False) -> None:
        self.agent, self.encoder, self.psb_model, self.deterministic = agent, encoder, psb_model, deterministic
        self.slot_geometry = slot_geometry
        self.reads_frames = encoder in ("slots", "pixels")
        """Whether it acts on frames (slots and pixels agents) rather than on the env's observations."""
        self.stream: Any = None
        self.last_slots: np.ndarray | None = None
        """A slot agent's slots ``(B, N, D)`` of the last call (before any geometry features), e.g. to decode."""
        self.__name__ = f"{encoder} agent"

    def reset(self, mask: np.ndarray | None = None) -> None:
        """Forget the history of every env, or of those where ``mask`` (bool ``(B,)``) is True."""
        if self.stream is not None:
            self.stream.reset(None if mask is None else np.asarray(mask, dtype=bool))

    def __call__(self, observations: np.ndarray) -> np.ndarray:
        obs = np.asarray(observations)
        if self.encoder == "slots":
            from psb_rl.streaming import StreamingEncoder

            if self.stream is None or self.stream.num_envs != len(obs):
                self.stream = StreamingEncoder(self.psb_model, num_envs=len(obs))
            from psb_rl.wrappers import slot_observations

            with torch.inference_mode():
                slots = self.stream.step(obs)
                self.last_slots = slots.cpu().numpy()
                obs = slot_observations(self.psb_model, slots, self.slot_geometry, obs)
        elif self.encoder == "pixels" and obs.ndim == 4 and obs.shape[-1] == 3:
            obs = np.ascontiguousarray(np.moveaxis(obs, -1, 1))  # what VecTransposeImage gave in training
        return self.agent.predict(obs, deterministic=self.deterministic)[0]


def load_agent_policy(model_path: str | os.PathLike, observation_space: gym.Space, action_space: gym.Space,
                      deterministic: bool = False, device: torch.device | str = "cpu",
                      frame_space: gym.Space | None = None) -> AgentPolicy:
    """Load an agent of ``agents/train_ppo.py`` (slots, pixels or state) to act on raw env observations.

    The run's ``args.json`` beside the zip says how to rebuild it; a slot agent's PSB checkpoint is the one
    the run recorded (its SHA-256 is checked).

    :param model_path: the agent's ``model.zip``.
    :param observation_space: one env's raw observation space (frames ``(H, W, 3)`` for slots / pixels).
    :param action_space: one env's action space.
    :param deterministic: greedy actions.
    :param device: torch device of the policy and the encoder.
    :param frame_space: the space of the frames a slot or pixel agent will be given, when they are not the
        observations (e.g. ``env.render()`` frames through a frame pipeline, as rollout collection stores them).
    :raises AgentLoadError: for a zip without its run's ``args.json`` (other SB3 zips are never loaded:
        that would unpickle them).
    """
    from psb_rl.wrappers import load_frozen_encoder, slot_observation_space

    path = Path(model_path)
    saved_num_timesteps(path)
    record = read_run_record(path.parent)
    if record is None:
        raise AgentLoadError(
            f"{path} has no {RUN_ARGS_NAME} beside it: only agents trained by agents/train_ppo.py (their run "
            "folder) are loaded, because loading other stable-baselines3 zips unpickles them, which can run "
            "code. Load a policy you trust yourself and pass it as a callable (collect_rollouts(policy=...))."
        )
    missing = [name for name in ("encoder", "features_dim", "pooling", "d_model", "num_layers", "num_heads",
                                 "n_steps", "batch_size", "seed") if name not in record]
    if missing:
        raise AgentLoadError(f"{path.parent / RUN_ARGS_NAME} lacks {missing}; it was not written by agents/train_ppo.py")
    defaults = {"embed_layers": 1, "relation": False, "share_extractor": True, "mask_feature_index": -1,
                "anneal_lr": False, "verbose": 0, "checkpoint": None, **NETWORK_DEFAULTS}
    args = types.SimpleNamespace(**{**defaults, **record, "mirror_from": None})  # acting needs no mirrors
    if args.encoder not in ENCODERS:
        raise AgentLoadError(f"{path.parent / RUN_ARGS_NAME}: unknown encoder {args.encoder!r}")
    psb_model = None
    space = frame_space if frame_space is not None and args.encoder in ("slots", "pixels") else observation_space
    if args.encoder == "slots":
        if not args.checkpoint:
            raise AgentLoadError(f"{path.parent / RUN_ARGS_NAME} names no PSB checkpoint for its slot agent")
        verify_run_checkpoint(record, args.checkpoint, str(path.parent))
        psb_model = load_frozen_encoder(args.checkpoint, device)
        space = slot_observation_space(psb_model, observed_geometry(args))
    elif args.encoder == "pixels" and isinstance(space, gym.spaces.Box) and len(space.shape) == 3 \
            and space.shape[-1] == 3:
        from stable_baselines3.common.vec_env import VecTransposeImage

        space = VecTransposeImage.transpose_space(space)
    agent = load_agent(path, args, device, (space, action_space))
    return AgentPolicy(agent, args.encoder, psb_model, deterministic, observed_geometry(args))


def agent_env_kwargs(model_path: str | os.PathLike) -> dict[str, Any]:
    """The ``gym.make`` arguments an agent of ``agents/train_ppo.py`` acted in: the rendering options its PSB
    checkpoint's frames were recorded with (e.g. MiniGrid's ``highlight=False``), then the run's ``--env-kwargs``.

    :param model_path: the agent's ``model.zip`` (its run's ``args.json`` beside it).
    :return: the arguments (empty for a zip without a run record).
    """
    from psb_rl.checkpoint import read_checkpoint
    from psb_rl.frames import pipeline_for_model

    record = read_run_record(Path(model_path).parent) or {}
    kwargs: dict[str, Any] = {}
    if record.get("checkpoint") and Path(record["checkpoint"]).is_file():
        kwargs.update(pipeline_for_model(read_checkpoint(record["checkpoint"])[1]).env_kwargs or {})
    explicit = record.get("env_kwargs") or "{}"
    kwargs.update(json.loads(explicit) if isinstance(explicit, str) else explicit)
    return kwargs


def run_record(args: Any) -> dict[str, Any]:
    """The ``args.json`` content of a run: its arguments plus, for slots, its checkpoint's provenance."""
    record = dataclasses.asdict(args)
    if args.encoder == "slots" and args.checkpoint:
        record.update(checkpoint_record(args.checkpoint))
    return record

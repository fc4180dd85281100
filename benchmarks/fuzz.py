"""Fuzz every entry point with generated malformed inputs: each case must end in success or one clear error.

Entry points: the frame paths (``FramePipeline.apply``, ``preprocess_frames``, ``StreamingEncoder.step``,
``PSBAutoencoder.encode``, ``PSBObservationWrapper``, ``VecPSBWrapper``), PSB checkpoints, training states
(``--resume``), rollout directories (reading and collecting), run directories, and the command lines of
``pretrain/train_psb.py``, ``pretrain/collect_rollouts.py``, ``pretrain/evaluate.py``, ``agents/train_ppo.py``
and ``agents/evaluate.py`` (their ``main(argv)`` through ``psb_rl.cli.run_main``, in process).

A case passes when it

- succeeds where the input is valid (and its result is sound: finite slots of the right shape), or
- fails with one clear error: in Python a user error (:func:`psb_rl.cli.is_user_error`) raised on purpose by
  psb-rl, with a message; on a command line exit code 2 and one ``error:`` line on stderr, no traceback;

and it never hangs (a per-case time limit), never succeeds on input that must be refused (e.g. float frames in
0..255: a silent wrong result), and never loses or changes a file it was given (every input file is digested
before and after; only the files a case is asked to replace, e.g. with ``--overwrite``, may change).

    python benchmarks/fuzz.py --cases 10000            # writes benchmarks/results/fuzz.json
    python benchmarks/fuzz.py --cases 200 --seed 3 --entry-points frames.streaming checkpoint.load

``tests/test_fuzz.py`` runs a fast seeded slice of the same cases.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import hashlib
import io
import json
import os
import pickle
import platform
import shutil
import signal
import sys
import tempfile
import time
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: the repository's packages (agents, envs, pretrain scripts)
    sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

from psb_rl.utils import repository_commit  # noqa: E402

TINY = {"image_size": 16, "num_slots": 3, "slot_dim": 16, "num_blocks": 1, "num_heads": 2, "window": 2,
        "encoder_channels": 8, "decoder_channels": 8, "decoder_grid": 4}
"""The model every case uses: tiny, so a case costs milliseconds."""
TINY_FLAGS = ["--image-size", "16", "--num-slots", "3", "--slot-dim", "16", "--num-blocks", "1", "--num-heads", "2",
              "--window", "2", "--encoder-channels", "8", "--decoder-channels", "8", "--decoder-grid", "4"]
CASE_SECONDS = 60
"""A case running longer than this is a hang."""


class CaseFailure(AssertionError):
    """A case ended in neither a success nor one clear error."""


class Hang(BaseException):
    """Raised by the per-case alarm."""


@dataclass
class Case:
    """One generated case: what it runs, what it may end in, and the files it must leave alone."""

    entry_point: str
    description: str
    run: Callable[[], Any]
    expect: str = "either"
    """"ok" (must succeed), "error" (must fail with one clear error) or "either"."""
    check: Callable[[Any], None] | None = None
    """validates a success's result (raises CaseFailure)"""
    inputs: list[Path] = field(default_factory=list)
    """files and folders whose files must keep their bytes"""
    may_change: set[str] = field(default_factory=set)
    """names of input files the case may replace or delete (e.g. --overwrite's run files)"""
    cli: bool = False
    """run is a command line: its result is (exit code, stderr)"""


# ---------------------------------------------------------------------------------------------------- checks
def _digests(paths: list[Path]) -> dict[str, str]:
    found: dict[str, str] = {}
    for path in paths:
        files = [path] if path.is_file() else sorted(p for p in path.rglob("*") if p.is_file()) if path.is_dir() else []
        for file in files:
            if file.name == ".lock" or file.name.endswith(".tmp"):
                continue
            with contextlib.suppress(OSError):
                found[str(file)] = hashlib.sha256(file.read_bytes()).hexdigest()
    return found


def _raised_by_project(error: BaseException) -> bool:
    """Whether psb-rl raised ``error`` itself (its class is the project's, or its raising frame is project code)."""
    if type(error).__module__.split(".")[0] in ("psb_rl", "agents", "envs"):
        return True
    tb = error.__traceback__
    last = None
    while tb is not None:
        last = tb.tb_frame.f_code.co_filename
        tb = tb.tb_next
    return last is not None and Path(last).resolve().is_relative_to(ROOT) and ".venv" not in last \
        and "site-packages" not in last


def clear_error(error: BaseException) -> str | None:
    """Why ``error`` is not one clear error (None when it is)."""
    from psb_rl.cli import is_user_error

    if not is_user_error(error):
        return f"not a user error: {type(error).__name__}"
    if not str(error).strip():
        return f"{type(error).__name__} without a message"
    if not _raised_by_project(error):
        return f"{type(error).__name__} raised outside psb-rl: {str(error)[:120]}"
    return None


def _cli_problem(code: int, stderr: str, expect: str) -> str | None:
    lines = [line for line in stderr.splitlines() if line.strip()]
    if "Traceback" in stderr:
        return "traceback on stderr"
    if code == 0:
        return "exit 0 where an error was expected" if expect == "error" else None
    if code != 2:
        return f"exit code {code}"
    errors = [line for line in lines if line.startswith("error: ")]
    if len(errors) != 1 or lines[-1] != errors[0]:
        return f"{len(errors)} error lines among {len(lines)} stderr lines"
    if len(lines) != 1:
        return f"{len(lines) - 1} line(s) before the error line: {lines[0][:120]}"
    return "an error where success was expected" if expect == "ok" else None


@contextlib.contextmanager
def _time_limit(seconds: int) -> Iterator[None]:
    def alarm(signum: int, frame: Any) -> None:
        raise Hang()

    previous = signal.signal(signal.SIGALRM, alarm)
    signal.alarm(seconds)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


def run_case(case: Case) -> str | None:
    """Run one case. :return: None when it passed, else what went wrong."""
    before = _digests(case.inputs)
    problem = None
    try:
        with _time_limit(CASE_SECONDS), warnings.catch_warnings():
            warnings.simplefilter("ignore")
            result = case.run()
        if case.cli:
            problem = _cli_problem(*result, case.expect)
        elif case.expect == "error":
            problem = "succeeded where an error was expected (a silent wrong result)"
        elif case.check is not None:
            case.check(result)
    except Hang:
        problem = f"hang (over {CASE_SECONDS} s)"
    except CaseFailure as failure:
        problem = str(failure)
    except Exception as error:
        reason = clear_error(error)
        if reason is not None:
            problem = f"{reason}\n{''.join(traceback.format_exception(error))[-1500:]}"
        elif case.expect == "ok":
            problem = f"an error where success was expected: {type(error).__name__}: {str(error)[:200]}"
    after = _digests(case.inputs)
    lost = sorted(name for name, digest in before.items()
                  if after.get(name) != digest and Path(name).name not in case.may_change)
    if lost:
        problem = (problem + "; " if problem else "") + f"input files changed or lost: {lost[:4]}"
    return problem


# ------------------------------------------------------------------------------------------------- fixtures
class Fixtures:
    """What cases start from, built once in ``root``: a tiny model and its checkpoint, a tiny collection, a
    training state and a state agent's run folder."""

    def __init__(self, root: Path) -> None:
        from psb_rl import PSBAutoencoder, PSBConfig, save_checkpoint
        from psb_rl.frames import FramePipeline
        from psb_rl.rollouts import collect_rollouts

        self.root = root
        torch.manual_seed(0)
        self.model = PSBAutoencoder(PSBConfig(**TINY)).eval().requires_grad_(False)
        self.recorded = PSBAutoencoder(PSBConfig(**TINY)).eval().requires_grad_(False)
        self.recorded.frame_pipeline = FramePipeline(size=(16, 16), input_size=(24, 24))
        self.checkpoint = save_checkpoint(self.model, root / "base.ckpt")
        self.rollouts = root / "rollouts"
        collect_rollouts("PSB/RandomObjects-v0", self.rollouts, episodes=4, episodes_per_shard=2, resize=16,
                         max_episode_steps=5, seed=0, progress=False)
        self.train_state = root / "train_state.pt"
        self._write_train_state()
        self.agent_run = root / "agent"
        self._write_agent()
        self.counter = 0

    def _write_train_state(self) -> None:
        from psb_rl.shards import manifest_record
        from psb_rl.training import TrainArgs, save_train_state

        args = self.train_args()
        model = _model_for(args)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        history = [{"step": 1, "loss": 0.1, "mse": 0.1, "mask_change": 0.0, "grad_norm": 1.0, "lr": 1e-3}]
        save_train_state(self.train_state, model, optimizer, 1, args, history, 0.5,
                         manifest_record(self.rollouts))
        assert isinstance(args, TrainArgs)

    def train_args(self, **overrides: Any) -> Any:
        from psb_rl.training import TrainArgs

        fields = dict(TINY, image_size=(16,), data=str(self.rollouts), out=str(self.root / "unused"), steps=1,
                      batch_size=2, clip_len=2, eval_every=0, eval_clips=1, num_gifs=0, progress=False, device="cpu",
                      torch_threads=1, val_fraction=0.25)
        fields.update(overrides)
        return TrainArgs(**fields)

    def _write_agent(self) -> None:
        import gymnasium as gym

        import envs  # noqa: F401  (registers the PSB/ ids)
        from agents.train_ppo import Args
        from psb_rl.agent_io import build_agent, run_record
        from psb_rl.utils import write_json

        self.agent_run.mkdir()
        args = Args(env="PSB/OddOneOut-v0", encoder="state", n_envs=1, n_steps=8, batch_size=8, features_dim=8,
                    d_model=8, num_layers=1, num_heads=1, out=str(self.agent_run), device="cpu", tensorboard=False)
        env = gym.make("PSB/OddOneOut-v0", obs_mode="state")
        build_agent(args, (env.observation_space, env.action_space), "cpu").save(self.agent_run / "model.zip")
        write_json(self.agent_run / "args.json", run_record(args))

    def scratch(self) -> Path:
        """A new empty folder for one case."""
        self.counter += 1
        path = self.root / "cases" / f"{self.counter:06d}"
        path.mkdir(parents=True)
        return path


def _model_for(args: Any) -> Any:
    from psb_rl.model import PSBAutoencoder

    return PSBAutoencoder(args.model_config())


# --------------------------------------------------------------------------------------------------- frames
FLOAT_DTYPES = (np.float32, np.float64, np.float16)


def _frame_values(rng: np.random.Generator, shape: tuple[int, ...], dtype: Any, kind: str) -> np.ndarray:
    if kind == "unit":
        return rng.random(shape).astype(dtype)
    if kind == "0..255":
        values = rng.integers(0, 256, shape).astype(dtype)
        values.flat[0] = 200  # surely out of [0, 1]
        return values
    if kind == "negative":
        values = rng.random(shape).astype(dtype)
        values.flat[-1] = -0.5
        return values
    values = rng.random(shape).astype(dtype)
    values.flat[int(rng.integers(values.size))] = {"nan": np.nan, "inf": np.inf, "-inf": -np.inf}[kind]
    return values


@dataclass
class FrameInput:
    """Generated frames and what they are."""

    frames: Any
    valid: bool | None
    """True: any frame path must read them; False: every frame path must refuse them; None: depends"""
    nonfinite: bool = False
    what: str = ""


def make_frames(rng: np.random.Generator, batch: int, channels_first_float: bool = True) -> FrameInput:
    """A batch of frames (``batch`` rows) of a random dtype, range, shape, layout and container."""
    h, w = (int(v) for v in rng.choice([8, 16, 24, 33], 2))
    choice = rng.integers(12)
    if choice <= 2:  # valid uint8 (B, H, W, 3)
        frames: Any = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        return FrameInput(frames, True, what=f"uint8 {frames.shape}")
    dtype = FLOAT_DTYPES[int(rng.integers(len(FLOAT_DTYPES)))]
    shape = (batch, 3, h, w) if channels_first_float else (batch, h, w, 3)
    if choice <= 4:
        return FrameInput(_frame_values(rng, shape, dtype, "unit"), True, what=f"float {shape} in [0, 1]")
    if choice <= 6:
        kind = ["0..255", "negative"][int(rng.integers(2))]
        return FrameInput(_frame_values(rng, shape, dtype, kind), False, what=f"float {shape} {kind}")
    if choice == 7:
        kind = ["nan", "inf", "-inf"][int(rng.integers(3))]
        return FrameInput(_frame_values(rng, shape, dtype, kind), None, nonfinite=True, what=f"float {shape} {kind}")
    if choice == 8:  # other dtypes
        bad = [np.int32, np.int64, np.bool_, np.complex64, np.uint16][int(rng.integers(5))]
        return FrameInput(np.zeros((batch, h, w, 3), dtype=bad), False, what=f"dtype {np.dtype(bad)}")
    if choice == 9:  # other shapes
        shapes = [(batch, h, w), (batch, h, w, 2), (batch, h, w, 5), (h, w, 3), (batch + 1, h, w, 3), (batch, 0, w, 3),
                  (batch, h, w, 3, 1), (), (0,), (batch, 1, 1, 3)]
        shape = shapes[int(rng.integers(len(shapes)))]
        return FrameInput(rng.integers(0, 256, shape, dtype=np.uint8), None, what=f"uint8 {shape}")
    if choice == 10:  # containers
        kinds = ["list", "ragged", "empty", "none", "string", "tensor", "nested-none"]
        kind = kinds[int(rng.integers(len(kinds)))]
        good = rng.integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
        value = {"list": lambda: [f for f in good], "ragged": lambda: [good[0], good[0][:-1]] * max(1, batch // 2 + 1),
                 "empty": lambda: [], "none": lambda: None, "string": lambda: "frames",
                 "tensor": lambda: torch.from_numpy(good), "nested-none": lambda: [None] * batch}[kind]()
        return FrameInput(value, True if kind in ("list", "tensor") else None, what=f"container {kind}")
    rgba = rng.integers(0, 256, (batch, h, w, 4), dtype=np.uint8)
    return FrameInput(rgba, None, what=f"RGBA {rgba.shape}")


def _check_slots(batch: int, fixtures: Fixtures) -> Callable[[Any], None]:
    shape = (batch, TINY["num_slots"], TINY["slot_dim"])

    def check(slots: Any) -> None:
        array = slots.detach().numpy() if torch.is_tensor(slots) else np.asarray(slots)
        if array.shape[-2:] != shape[-2:] or not np.isfinite(array).all():
            raise CaseFailure(f"unsound slots: shape {array.shape}, finite {bool(np.isfinite(array).all())}")

    return check


def _expect(frames: FrameInput, nonfinite: str = "raise") -> str:
    if frames.nonfinite:
        return "error" if nonfinite == "raise" else "either"
    return {True: "ok", False: "error", None: "either"}[frames.valid]


def case_pipeline(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    from psb_rl.frames import FramePipeline

    frames = make_frames(rng, int(rng.integers(1, 4)), channels_first_float=False)
    pipeline = [FramePipeline(), FramePipeline(size=12), FramePipeline(crop=(1, 2, 3, 0), size=(10, 14))][
        int(rng.integers(3))]
    expect = _expect(frames)
    if isinstance(frames.frames, np.ndarray) and frames.frames.shape[-1:] == (4,):
        expect = "ok"  # RGBA: alpha dropped

    def check(out: Any) -> None:
        if out.dtype != np.uint8 or out.shape[-1] != 3:
            raise CaseFailure(f"pipeline made {out.dtype} {out.shape}")

    return Case("frames.pipeline", f"{pipeline.describe()} on {frames.what}",
                lambda: pipeline.apply(frames.frames), expect, check)


def case_preprocess(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    from psb_rl.preprocessing import preprocess_frames

    frames = make_frames(rng, int(rng.integers(1, 4)))

    def check(out: Any) -> None:
        if not torch.isfinite(out).all() or out.min() < 0 or out.max() > 1:
            raise CaseFailure("preprocess_frames returned values outside [0, 1]")

    return Case("frames.preprocess", frames.what, lambda: preprocess_frames(frames.frames, 16), _expect(frames), check)


def case_streaming(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    from psb_rl.streaming import StreamingEncoder

    batch = int(rng.integers(1, 4))
    nonfinite = ["raise", "reset"][int(rng.integers(2))]
    frames = make_frames(rng, batch)
    encoder = StreamingEncoder(fixtures.model, num_envs=batch, nonfinite=nonfinite)  # type: ignore[arg-type]
    mask = None if rng.random() < 0.7 else np.array([True] + [bool(v) for v in rng.integers(0, 2, batch - 1)])

    def run() -> Any:
        return encoder.step(frames.frames, mask=mask)

    # with a mask, the frames of envs that do not advance are not read (whatever they hold)
    return Case("frames.streaming", f"{frames.what}, nonfinite={nonfinite}, mask={mask}", run,
                _expect(frames, nonfinite) if mask is None or mask.all() else "either", _check_slots(batch, fixtures))


def case_model_encode(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    frames = make_frames(rng, 1)
    model = fixtures.recorded if rng.random() < 0.5 else fixtures.model
    video = frames.frames
    if isinstance(video, np.ndarray) and video.ndim == 4:
        video = np.stack([video, video], axis=1)  # (B, T, ...)
    elif torch.is_tensor(video) and video.ndim == 4:
        video = torch.stack([video, video], dim=1)
    else:
        frames = dataclasses.replace(frames, valid=None)  # not a video: either refused or read
    if frames.valid is True and isinstance(video, np.ndarray) and video.dtype != np.uint8:
        video = torch.from_numpy(np.ascontiguousarray(video))  # float videos as tensors
    expect = _expect(frames)
    if frames.valid and model is fixtures.recorded:
        expect = "either"  # the recorded pipeline wants 24x24 frames

    def check(slots: Any) -> None:
        if not torch.isfinite(slots).all():
            raise CaseFailure("model.encode returned non-finite slots")

    return Case("frames.model_encode", frames.what, lambda: model.encode(video), expect, check)


class _FrameEnv:
    """A gymnasium env whose observations are the frames a case gives (declared as their own space)."""

    def __new__(cls, frames: list[np.ndarray], space_shape: tuple[int, ...], dtype: Any, high: float) -> Any:
        import gymnasium as gym

        class FrameEnv(gym.Env):
            def __init__(self) -> None:
                self.observation_space = gym.spaces.Box(0, high, space_shape, dtype)
                self.action_space = gym.spaces.Discrete(2)
                self.t = 0

            def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[Any, dict]:
                super().reset(seed=seed)
                self.t = 0
                return frames[0], {}

            def step(self, action: int) -> tuple[Any, float, bool, bool, dict]:
                self.t += 1
                return frames[min(self.t, len(frames) - 1)], 0.0, False, False, {}

        return FrameEnv()


def _wrapper_frames(rng: np.random.Generator) -> tuple[list[np.ndarray], tuple[int, ...], Any, float, FrameInput]:
    frames = make_frames(rng, 3, channels_first_float=bool(rng.integers(2)))
    array = frames.frames
    if not isinstance(array, np.ndarray) or array.ndim < 3 or array.dtype not in (np.uint8, *FLOAT_DTYPES):
        array = rng.integers(0, 256, (3, 24, 24, 3), dtype=np.uint8)
        frames = FrameInput(array, True, what="uint8 (24, 24, 3)")
    dtype = array.dtype
    high = 255.0 if dtype == np.uint8 else 1.0
    shape = tuple(array.shape[1:])
    if rng.random() < 0.1:  # declares another size than it returns
        shape = (shape[0] + 2, *shape[1:])
        frames = dataclasses.replace(frames, valid=False, nonfinite=False, what=frames.what + " (declared larger)")
    return list(array), shape, dtype, high, frames


def case_obs_wrapper(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    from psb_rl.wrappers import PSBObservationWrapper

    frames, shape, dtype, high, info = _wrapper_frames(rng)
    nonfinite = ["raise", "reset"][int(rng.integers(2))]
    model = fixtures.recorded if rng.random() < 0.5 else fixtures.model

    def run() -> Any:
        env = PSBObservationWrapper(_FrameEnv(frames, shape, dtype, high), checkpoint=model, nonfinite=nonfinite)
        slots = [env.reset(seed=0)[0]]
        slots += [env.step(0)[0] for _ in range(2)]
        return np.stack(slots)

    expect = _expect(info, nonfinite)
    if model is fixtures.recorded and info.valid:
        expect = "either"  # the recorded pipeline refuses frames of another size than 24x24
    return Case("frames.obs_wrapper", f"{info.what}, nonfinite={nonfinite}", run, expect, _check_slots(3, fixtures))


def case_vec_wrapper(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    from stable_baselines3.common.vec_env import DummyVecEnv

    from psb_rl.wrappers import VecPSBWrapper

    frames, shape, dtype, high, info = _wrapper_frames(rng)
    nonfinite = ["raise", "reset"][int(rng.integers(2))]
    model = fixtures.recorded if rng.random() < 0.5 else fixtures.model
    n_envs = int(rng.integers(1, 3))

    def run() -> Any:
        venv = VecPSBWrapper(DummyVecEnv([lambda: _FrameEnv(frames, shape, dtype, high)] * n_envs),
                             checkpoint=model, nonfinite=nonfinite)
        slots = [venv.reset()]
        slots += [venv.step(np.zeros(n_envs, dtype=np.int64))[0] for _ in range(2)]
        return np.concatenate(slots)

    expect = _expect(info, nonfinite)
    if model is fixtures.recorded and info.valid:
        expect = "either"
    return Case("frames.vec_wrapper", f"{info.what}, {n_envs} envs, nonfinite={nonfinite}", run, expect,
                _check_slots(3, fixtures))


# ----------------------------------------------------------------------------------------------- checkpoints
def _mutate_bytes(rng: np.random.Generator, data: bytes) -> tuple[bytes, str, str]:
    """A damaged copy of a safetensors file. :return: (bytes, what, expectation)."""
    header = 8 + int.from_bytes(data[:8], "little")
    kind = ["truncate", "flip-data", "flip-header", "empty", "pickle", "torch-save", "garbage", "append"][
        int(rng.integers(8))]
    if kind == "truncate":
        cut = int(rng.integers(0, len(data)))
        return data[:cut], f"truncated at {cut}", "error"
    if kind in ("flip-data", "flip-header"):
        raw = bytearray(data)
        lo, hi = (header, len(raw)) if kind == "flip-data" else (0, header)
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(lo, hi))] ^= int(rng.integers(1, 256))
        # a flipped header byte may still give a valid checkpoint (e.g. one digit of a setting changed)
        return bytes(raw), kind, "error" if kind == "flip-data" else "either"
    if kind == "empty":
        return b"", kind, "error"
    if kind == "pickle":
        return pickle.dumps({"weights": [1, 2, 3]}), kind, "error"
    if kind == "torch-save":
        buffer = io.BytesIO()
        torch.save({"model": torch.zeros(3)}, buffer)
        return buffer.getvalue(), kind, "error"
    if kind == "garbage":
        return bytes(rng.integers(0, 256, int(rng.integers(1, 400)), dtype=np.uint8)), kind, "error"
    return data + b"\x00" * int(rng.integers(1, 64)), "trailing bytes", "either"


def _rewritten_checkpoint(rng: np.random.Generator, fixtures: Fixtures, path: Path) -> tuple[str, str]:
    """A well-formed safetensors file whose tensors or metadata are wrong. :return: (what, expectation)."""
    from safetensors import safe_open
    from safetensors.torch import save_file

    from psb_rl.checkpoint import _weights_digest

    with safe_open(str(fixtures.checkpoint), framework="pt") as handle:
        metadata = dict(handle.metadata())
        tensors = {name: handle.get_tensor(name) for name in handle.keys()}
    config = json.loads(metadata["config"])
    kind = ["drop-tensor", "extra-tensor", "reshape", "dtype", "config-field", "config-type", "config-unknown",
            "no-config", "format", "version", "extra-json", "pipeline"][int(rng.integers(12))]
    name = sorted(tensors)[int(rng.integers(len(tensors)))]
    if kind == "drop-tensor":
        del tensors[name]
    elif kind == "extra-tensor":
        tensors["unexpected.weight"] = torch.zeros(2)
    elif kind == "reshape":
        tensors[name] = torch.zeros(tensors[name].numel() + 1)
    elif kind == "dtype":
        tensors[name] = tensors[name].to(torch.float64)
    elif kind == "config-field":
        key = ["num_slots", "slot_dim", "num_heads", "encoder_channels", "window", "image_size"][int(rng.integers(6))]
        config[key] = [0, -1, 7, 1000, None][int(rng.integers(5))]
    elif kind == "config-type":
        key = sorted(config)[int(rng.integers(len(config)))]
        config[key] = ["text", [1, 2], {"a": 1}, 1.5][int(rng.integers(4))]
    elif kind == "config-unknown":
        config["no_such_field"] = 1
    elif kind == "no-config":
        del metadata["config"]
    elif kind == "format":
        metadata["format"] = "other"
    elif kind == "version":
        metadata["format_version"] = ["99", "x", "-1"][int(rng.integers(3))]
    elif kind == "extra-json":
        metadata["extra"] = ["{", "[1]", '"text"'][int(rng.integers(3))]
    else:
        metadata["extra"] = json.dumps({"frame_pipeline": [{"crop": [1, 2]}, {"size": -3}, {"unknown": 1}, "x"][
            int(rng.integers(4))]})
    metadata["config"] = json.dumps(config) if "config" in metadata or kind != "no-config" else None
    if metadata["config"] is None:
        del metadata["config"]
    if kind in ("drop-tensor", "extra-tensor", "reshape", "dtype"):
        metadata["weights_sha256"] = _weights_digest(tensors)  # consistent checksum: only the content is wrong
    save_file(tensors, str(path), metadata=metadata)
    # a wider window, say, still describes the weights: such a file is a valid (other) checkpoint
    return kind, "either" if kind in ("config-field", "config-type", "version") else "error"


def case_checkpoint(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    from psb_rl.checkpoint import load_checkpoint

    folder = fixtures.scratch()
    path = folder / "psb.ckpt"
    choice = rng.random()
    if choice < 0.45:
        data, what, expect = _mutate_bytes(rng, fixtures.checkpoint.read_bytes())
        path.write_bytes(data)
    elif choice < 0.9:
        what, expect = _rewritten_checkpoint(rng, fixtures, path)
    elif choice < 0.95:
        path.mkdir()
        what, expect = "a directory", "error"
    else:
        what, expect = "missing file", "error"

    def check(model: Any) -> None:
        slots = model.encode(torch.rand(1, 2, 3, 16, 16))
        if not torch.isfinite(slots).all():
            raise CaseFailure("a loaded checkpoint gives non-finite slots")

    return Case("checkpoint.load", what, lambda: load_checkpoint(path), expect, check, inputs=[folder])


# ------------------------------------------------------------------------------------------- training states
def case_train_state(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    from psb_rl.shards import manifest_record
    from psb_rl.training import DistInfo, resume_training

    folder = fixtures.scratch()
    path = folder / "train_state.pt"
    data = fixtures.train_state.read_bytes()
    kind = ["intact", "truncate", "flip", "pickle", "raw-pickle", "wrong-keys", "wrong-tensors", "bad-json",
            "other-args", "empty"][int(rng.integers(10))]
    expect = "error"
    if kind == "intact":
        path.write_bytes(data)
        expect = "ok"
    elif kind == "truncate":
        path.write_bytes(data[: int(rng.integers(0, len(data)))])
    elif kind == "flip":
        raw = bytearray(data)
        for _ in range(int(rng.integers(1, 4))):
            raw[int(rng.integers(len(raw)))] ^= int(rng.integers(1, 256))
        path.write_bytes(bytes(raw))
        expect = "either"  # a flip inside a tensor's bytes reads as other (valid) numbers
    elif kind == "pickle":
        torch.save({"step": 1, "model": _Marker()}, path)
    elif kind == "raw-pickle":
        path.write_bytes(pickle.dumps({"step": 1}))
    elif kind == "empty":
        path.write_bytes(b"")
    else:
        state = torch.load(fixtures.train_state, weights_only=True)
        if kind == "wrong-keys":
            key = sorted(state)[int(rng.integers(len(state)))]
            del state[key]
            expect = "either" if key in ("train_seconds", "data") else "error"  # those two are optional
        elif kind == "wrong-tensors":
            key = ["model", "optimizer", "torch_rng"][int(rng.integers(3))]
            state[key] = {"x": torch.zeros(3)} if key != "torch_rng" else torch.zeros(3)
        elif kind == "bad-json":
            state[["args", "history", "data"][int(rng.integers(3))]] = ["{", "[", "5", "null"][int(rng.integers(4))]
        else:
            args = json.loads(state["args"])
            args["slot_dim"] = 32
            state["args"] = json.dumps(args)
        torch.save(state, path)
    args = fixtures.train_args(resume=True)

    def run() -> Any:
        model = _model_for(args)
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
        return resume_training(args, model, optimizer, path, manifest_record(fixtures.rollouts),
                               DistInfo(rank=0, world_size=1, local_rank=0))

    return Case("resume.train_state", kind, run, expect, inputs=[folder])


class _Marker:
    """An object torch.save pickles: loading it would need the unpickler."""


# ------------------------------------------------------------------------------------------------- rollouts
def _damage_rollouts(rng: np.random.Generator, root: Path) -> tuple[str, str]:
    """Damage a copy of the collection. :return: (what, expectation of reading it)."""
    from psb_rl.shards import MANIFEST_NAME, save_npz, sha256_file

    manifest_path = root / MANIFEST_NAME
    manifest = json.loads(manifest_path.read_text())
    shard = manifest["shards"][int(rng.integers(len(manifest["shards"])))]
    kind = ["intact", "drop-field", "wrong-type", "lengths", "indices", "totals", "missing-shard", "truncate-shard",
            "flip-shard", "arrays", "manifest-json", "manifest-list", "no-manifest", "extra-file", "version",
            "entry-file"][int(rng.integers(16))]
    expect = "error"
    if kind == "intact":
        expect = "ok"
    elif kind == "drop-field":
        target = manifest if rng.random() < 0.5 else shard
        key = sorted(target)[int(rng.integers(len(target)))]
        del target[key]
        expect = "either"  # some fields are informative only
    elif kind == "wrong-type":
        target = manifest if rng.random() < 0.5 else shard
        key = sorted(target)[int(rng.integers(len(target)))]
        target[key] = ["text", -1, None, {"x": 1}, [1, "a"], 2.5][int(rng.integers(6))]
        expect = "either"
    elif kind == "lengths":
        shard["episode_lengths"] = [n + int(rng.choice([-2, -1, 1, 3])) for n in shard["episode_lengths"]]
        expect = "either" if min(shard["episode_lengths"]) < 0 else "error"
    elif kind == "indices":
        shard["episode_indices"] = shard["episode_indices"][:-1]
    elif kind == "totals":
        manifest["num_frames"] += int(rng.choice([-3, 5]))
        expect = "either"  # totals are checked by verify_rollouts, not needed to read
    elif kind == "missing-shard":
        (root / shard["file"]).unlink()
    elif kind == "truncate-shard":
        raw = (root / shard["file"]).read_bytes()
        (root / shard["file"]).write_bytes(raw[: int(rng.integers(0, len(raw)))])
    elif kind == "flip-shard":
        raw = bytearray((root / shard["file"]).read_bytes())
        raw[int(rng.integers(len(raw)))] ^= 0xFF
        (root / shard["file"]).write_bytes(bytes(raw))
    elif kind == "arrays":  # a shard whose arrays disagree, with a matching checksum (a writer bug, say)
        with np.load(root / shard["file"], allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
        key = ["frames", "actions", "episode_lengths", "rewards", "masks"][int(rng.integers(5))]
        if key in arrays:
            arrays[key] = arrays[key][:-1]
        with open(root / shard["file"], "wb") as handle:
            save_npz(handle, arrays, False)
        shard["sha256"] = sha256_file(root / shard["file"])
    elif kind == "manifest-json":
        manifest_path.write_text(manifest_path.read_text()[: int(rng.integers(1, 60))])
        return kind, expect
    elif kind == "manifest-list":
        manifest_path.write_text("[1, 2]")
        return kind, expect
    elif kind == "no-manifest":
        manifest_path.unlink()
        return kind, expect
    elif kind == "extra-file":
        (root / "shard-00099.npz").write_bytes(b"left over")
        expect = "ok"
    elif kind == "version":
        manifest["format_version"] = 2
    else:
        shard["file"] = ["../base.ckpt", "shard-00042.npz", "/etc/passwd", ""][int(rng.integers(4))]
    manifest_path.write_text(json.dumps(manifest))
    return kind, expect


def _copy_rollouts(fixtures: Fixtures) -> tuple[Path, Path]:
    folder = fixtures.scratch()
    root = folder / "data"
    shutil.copytree(fixtures.rollouts, root)
    return folder, root


def case_rollouts_read(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    from psb_rl.data import RolloutDataset
    from psb_rl.shards import verify_rollouts

    folder, root = _copy_rollouts(fixtures)
    what, expect = _damage_rollouts(rng, root)
    verify = bool(rng.random() < 0.7)
    if not verify and what in ("flip-shard",):
        expect = "either"  # unverified: a flipped frame byte is another frame

    def run() -> Any:
        if rng.random() < 0.3:
            verify_rollouts(root)
        dataset = RolloutDataset(root, clip_len=2, split="all", verify=verify)
        clips = [dataset[i] for i in range(len(dataset))]
        episodes = list(dataset.episodes())
        return clips, episodes

    def check(result: Any) -> None:
        clips, episodes = result
        for clip in clips:
            if tuple(clip["frames"].shape) != (2, 16, 16, 3):
                raise CaseFailure(f"a clip of shape {tuple(clip['frames'].shape)}")
        for episode in episodes:
            if episode["frames"].shape[0] < 1:
                raise CaseFailure("an empty episode")

    return Case("rollouts.read", f"{what}, verify={verify}", run, expect, check, inputs=[folder])


def case_rollouts_collect(rng: np.random.Generator, fixtures: Fixtures) -> Case:
    from psb_rl.rollouts import collect_rollouts, repair_rollouts
    from psb_rl.utils import LOCK_NAME

    folder, root = _copy_rollouts(fixtures)
    state = ["damaged", "locked", "stale-lock", "file-in-the-way", "unwritable", "fresh"][int(rng.integers(6))]
    what, expect = state, "either"
    may_change: set[str] = set()
    if state == "damaged":
        what, _ = _damage_rollouts(rng, root)
    elif state == "locked":
        (root / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": platform.node()}))
        expect = "error"
    elif state == "stale-lock":
        (root / LOCK_NAME).write_text(["{", json.dumps({"pid": 2**22 + 7, "host": platform.node()})][int(rng.integers(2))])
    elif state == "file-in-the-way":
        shutil.rmtree(root)
        root.write_text("a file")
        expect = "error"
    elif state == "unwritable":
        root = Path("/proc/psb-fuzz") / "data"
        expect = "error"
    else:
        shutil.rmtree(root)
    mode = ["collect", "resume", "repair"][int(rng.integers(3))]
    if mode == "repair":
        may_change = {"manifest.json"} | {p.name for p in root.glob("shard-*.npz")} if root.is_dir() else set()
        # a repair collects damaged shards again: those listed in the manifest may be rewritten, never others

    def run() -> Any:
        if mode == "repair":
            return repair_rollouts(root, progress=False)
        return collect_rollouts("PSB/RandomObjects-v0", root, episodes=int(rng.integers(1, 6)), episodes_per_shard=2,
                                resize=16, max_episode_steps=5, seed=0, resume=mode == "resume", progress=False)

    if mode == "collect" and state in ("damaged", "stale-lock") and what != "no-manifest":
        expect = "error"  # a directory holding rollouts needs --resume
    if what == "no-manifest" and mode != "repair":
        expect = "error"  # shards whose manifest is lost are never collected over
    if mode == "resume" and what == "intact":
        expect = "ok"
    if mode == "resume":
        may_change = {"manifest.json"}  # a resumed collection appends shards and rewrites its manifest
    return Case("rollouts.collect", f"{mode} into {what}", run, expect, inputs=[folder], may_change=may_change)


# ----------------------------------------------------------------------------------------- command lines
def _run_cli(script: str, argv: list[str]) -> tuple[int, str]:
    """``run_main(main, argv)`` of a script, in this process: (exit code, stderr)."""
    from psb_rl.cli import run_main

    main = _script_main(script)
    stderr, stdout = io.StringIO(), io.StringIO()
    with contextlib.redirect_stderr(stderr), contextlib.redirect_stdout(stdout):
        try:
            code = run_main(main, argv)
        except SystemExit as exit_:  # the parser's one-line mistakes
            code = int(exit_.code or 0)
        except Exception:
            traceback.print_exc()
            code = 1
    return code, stderr.getvalue()


_MAINS: dict[str, Callable[..., Any]] = {}


def _script_main(script: str) -> Callable[..., Any]:
    if script not in _MAINS:
        import importlib
        import importlib.util

        if script.startswith("agents/"):
            module = importlib.import_module(script[:-3].replace("/", "."))
        else:
            name = "fuzz_" + Path(script).stem
            spec = importlib.util.spec_from_file_location(name, ROOT / script)
            module = importlib.util.module_from_spec(spec)  # type: ignore[arg-type]
            sys.modules[name] = module
            spec.loader.exec_module(module)  # type: ignore[union-attr]
        _MAINS[script] = module.main
    return _MAINS[script]


INVALID_INT = ["abc", "1.5", "", "0x10", "nan", "--", "1e3"]
"""Values no integer option takes."""


def _bad_value(rng: np.random.Generator, kind: str) -> str:
    if kind == "int":  # out-of-range numbers come from each flag's own list (0 is valid for some)
        return INVALID_INT[int(rng.integers(len(INVALID_INT)))]
    if kind == "float":
        return ["abc", "", "-1", "nan", "inf", "-inf", "1e400"][int(rng.integers(7))]
    return ["", "{", "[1]", "none"][int(rng.integers(4))]


# (flag, kind, valid values, values out of range (None: just the wrong type))
CLI_FLAGS: dict[str, list[tuple[str, str, list[str], list[str]]]] = {
    "pretrain/train_psb.py": [
        ("--steps", "int", ["1", "2"], ["0", "-5"]), ("--batch-size", "int", ["2", "4"], ["0", "-1"]),
        ("--clip-len", "int", ["2", "3"], ["0"]), ("--lr", "float", ["1e-3"], ["0", "-1"]),
        ("--val-fraction", "float", ["0.25", "0.5"], ["1", "1.5", "-0.1"]), ("--checkpoint-every", "int", ["1"], ["0"]),
        ("--eval-clips", "int", ["1"], ["0"]), ("--num-slots", "int", ["3", "2"], ["0"]),
        ("--window", "int", ["2", "none"], ["0"]), ("--image-size", "int", ["16", "16 12"], ["0", "16 0"]),
        ("--grad-clip", "float", ["1.0"], ["0", "-2"]), ("--max-minutes", "float", ["5"], ["0", "-1"]),
        ("--torch-threads", "int", ["1"], ["0", "-3"]), ("--encoder", "choice", ["psb"], ["slotz"]),
        ("--preset", "str", ["builtin"], ["nope"]), ("--num-workers", "int", ["0"], ["-1"]),
        ("--resume", "bool", [""], []), ("--overwrite", "bool", [""], []),
        ("--data", "path", ["@ROLLOUTS"], ["@MISSING", "@FILE", "@EMPTY"]),
        ("--foreground-weight", "float", ["1.0"], ["0", "-1"]),
    ],
    "agents/train_ppo.py": [
        ("--n-envs", "int", ["1"], ["0", "-2"]), ("--total-steps", "int", ["8", "16"], ["0", "-100"]),
        ("--n-steps", "int", ["8"], ["0"]), ("--batch-size", "int", ["8", "4"], ["0", "1"]),
        ("--n-epochs", "int", ["1"], ["0"]), ("--learning-rate", "float", ["3e-4"], ["0", "-1"]),
        ("--gamma", "float", ["0.9", "0.99"], ["1.5", "-0.1"]), ("--gae-lambda", "float", ["0.95"], ["2"]),
        ("--eval-freq", "int", ["0"], ["-1"]), ("--eval-episodes", "int", ["1"], ["0"]),
        ("--save-freq", "int", ["0"], ["-5"]), ("--encoder", "choice", ["state"], ["slotz"]),
        ("--env-kwargs", "json", ['{}'], ["{", "[1]", '{"no_such_argument": 1}', '{"obs_mode": "bogus"}']),
        ("--embed-layers", "int", ["1", "2"], ["0", "3"]), ("--verbose", "int", ["0"], ["5"]),
        ("--resume-from", "path", [], ["@MISSING", "@FILE", "@ROLLOUTS"]),
        ("--max-episode-steps", "int", ["5"], ["0"]), ("--torch-threads", "int", ["1"], ["0"]),
        ("--overwrite", "bool", [""], []), ("--vec-env", "choice", ["dummy"], ["threads"]),
    ],
    "agents/evaluate.py": [
        ("--episodes", "int", ["1"], ["0", "-3"]), ("--gif-max-steps", "int", ["5"], ["0"]),
        ("--fps", "float", ["8"], ["0", "-1"]), ("--seed", "int", ["0", "7"], ["-1"]),
        ("--run", "path", ["@AGENT"], ["@MISSING", "@ROLLOUTS", "@FILE"]),
        ("--model", "path", [], ["@MISSING", "@FILE", "@CKPT"]), ("--torch-threads", "int", ["1"], ["0"]),
        ("--device", "str", ["cpu"], ["gpu9"]), ("--env-kwargs", "json", [], ["{", '{"no_such_argument": 1}']),
    ],
    "pretrain/evaluate.py": [
        ("--clips", "int", ["1", "2"], ["0", "-1"]), ("--clip-len", "int", ["2"], ["0", "50"]),
        ("--batch-size", "int", ["1"], ["0"]), ("--multipliers", "int", ["1", "1 2"], ["0", "-2"]),
        ("--val-fraction", "float", ["0.25"], ["1", "-1"]), ("--split", "choice", ["all", "val"], ["test"]),
        ("--checkpoint", "path", ["@CKPT"], ["@MISSING", "@FILE", "@ROLLOUTS"]),
        ("--data", "path", ["@ROLLOUTS"], ["@MISSING", "@FILE", "@EMPTY"]), ("--torch-threads", "int", ["1"], ["0"]),
    ],
    "pretrain/collect_rollouts.py": [
        ("--episodes", "int", ["1", "2"], ["0", "-1"]), ("--steps", "int", ["3"], ["0"]),
        ("--num-envs", "int", ["1"], ["0", "-2"]), ("--episodes-per-shard", "int", ["1", "2"], ["0"]),
        ("--max-episode-steps", "int", ["3"], ["0", "-1"]), ("--resize", "int", ["16", "16 12"], ["0", "16 0 3"]),
        ("--crop", "int", ["0 0 0 0", "1 1 1 1"], ["-1 0 0 0", "0 0 0", "100 100 0 0"]),
        ("--pixels", "choice", ["obs"], ["camera"]), ("--env-kwargs", "json", [], ["{", '{"no_such_argument": 1}']),
        ("--policy", "str", ["random"], ["@MISSING", "@FILE"]), ("--resume", "bool", [""], []),
        ("--repair", "bool", [""], []), ("--torch-threads", "int", ["1"], ["0"]),
        ("--env", "str", ["PSB/RandomObjects-v0"], ["NoSuchEnv-v0", "PSB/NoSuch-v0"]),
    ],
}
CLI_BASE: dict[str, list[str]] = {
    "pretrain/train_psb.py": ["--data", "@ROLLOUTS", "--collect-episodes", "0", "--out", "@OUT", "--steps", "1",
                              "--batch-size", "2",
                              "--clip-len", "2", "--eval-every", "0", "--eval-clips", "1", "--num-gifs", "0",
                              "--val-fraction", "0.25", "--no-progress", "--device", "cpu", "--torch-threads", "1",
                              *TINY_FLAGS],
    "agents/train_ppo.py": ["--encoder", "state", "--env", "PSB/OddOneOut-v0", "--n-envs", "1", "--total-steps", "8",
                            "--n-steps", "8", "--batch-size", "8", "--n-epochs", "1", "--eval-freq", "0",
                            "--eval-episodes", "1", "--save-freq", "0", "--no-tensorboard", "--no-progress-bar",
                            "--features-dim", "8", "--d-model", "8", "--num-layers", "1", "--num-heads", "1",
                            "--max-episode-steps", "5", "--out", "@OUT", "--device", "cpu", "--torch-threads", "1"],
    "agents/evaluate.py": ["--run", "@AGENT", "--episodes", "1", "--gif", "none", "--device", "cpu",
                           "--torch-threads", "1"],
    "pretrain/evaluate.py": ["--checkpoint", "@CKPT", "--data", "@ROLLOUTS", "--clip-len", "2", "--clips", "1",
                             "--batch-size", "1", "--multipliers", "1", "--split", "all", "--out", "@OUT/m.json",
                             "--device", "cpu", "--torch-threads", "1"],
    "pretrain/collect_rollouts.py": ["--out", "@OUT", "--episodes", "1", "--max-episode-steps", "3", "--resize", "16",
                                     "--no-progress", "--torch-threads", "1"],
}


def _name(script: str) -> str:
    """``agents/evaluate.py`` -> ``agents.evaluate``: the entry point's name."""
    return script[:-3].replace("/", ".")


def case_cli(rng: np.random.Generator, fixtures: Fixtures, script: str) -> Case:
    folder = fixtures.scratch()
    (folder / "a-file").write_text("not what was asked for")
    (folder / "empty").mkdir()
    rollouts = folder / "data"
    shutil.copytree(fixtures.rollouts, rollouts)
    places = {"@ROLLOUTS": str(rollouts), "@MISSING": str(folder / "missing"), "@FILE": str(folder / "a-file"),
              "@EMPTY": str(folder / "empty"), "@AGENT": str(fixtures.agent_run), "@CKPT": str(fixtures.checkpoint),
              "@OUT": str(folder / "out")}
    argv = list(CLI_BASE[script])
    expect = "either"
    valid_only = rng.random() < 0.08  # now and then a run that should work (kept tiny by the base arguments)
    chosen = rng.choice(len(CLI_FLAGS[script]), size=int(rng.integers(1, 4)), replace=False)
    words = []
    for index in chosen:
        flag, kind, good, bad = CLI_FLAGS[script][int(index)]
        if kind == "bool":
            words.append(flag if rng.random() < 0.5 else "--no-" + flag[2:])
            continue
        if valid_only or (rng.random() < 0.4 and good):
            if not good:
                continue
            value = good[int(rng.integers(len(good)))]
        else:
            value = (bad[int(rng.integers(len(bad)))] if bad and rng.random() < 0.7 else _bad_value(rng, kind))
            if kind in ("int", "float") and not valid_only:
                expect = "error"
        words += [flag, *value.split()] if value else [flag, value]
    if not valid_only and rng.random() < 0.1:  # an option that does not exist, or a missing value
        words += [["--no-such-option", "1"], [CLI_FLAGS[script][0][0]]][int(rng.integers(2))]
        expect = "error"
    argv += words
    argv = [places.get(word, word.replace("@OUT", places["@OUT"])) for word in argv]
    inputs = [folder / "a-file", rollouts, fixtures.agent_run, fixtures.checkpoint, fixtures.rollouts]
    return Case(f"cli.{_name(script)}", " ".join(words) or "(base arguments)", lambda: _run_cli(script, argv),
                expect, inputs=inputs, cli=True)


# ------------------------------------------------------------------------------------------ run directories
def case_run_dir(rng: np.random.Generator, fixtures: Fixtures, script: str) -> Case:
    """train_psb.py or train_ppo.py against run folders in every state: half-written, locked, unwritable."""
    from psb_rl.utils import LOCK_NAME

    folder = fixtures.scratch()
    out = folder / "run"
    psb = script == "pretrain/train_psb.py"
    state = ["half-written", "finished-ckpt", "locked", "stale-lock", "garbage-lock", "file", "unwritable",
             "args-only", "empty"][int(rng.integers(9))]
    expect = "either"
    out.mkdir()
    if state == "half-written":
        if psb:
            (out / "psb.ckpt").write_bytes(fixtures.checkpoint.read_bytes()[:100])
            (out / "train_state.pt").write_bytes(fixtures.train_state.read_bytes()[:50])
        else:
            (out / "model.zip").write_bytes((fixtures.agent_run / "model.zip").read_bytes()[:200])
    elif state == "finished-ckpt":
        if psb:
            shutil.copy(fixtures.checkpoint, out / "psb.ckpt")
            shutil.copy(fixtures.train_state, out / "train_state.pt")
        else:
            shutil.copy(fixtures.agent_run / "model.zip", out / "model.zip")
    elif state == "locked":
        (out / LOCK_NAME).write_text(json.dumps({"pid": os.getpid(), "host": platform.node()}))
        expect = "error"
    elif state == "stale-lock":
        (out / LOCK_NAME).write_text(json.dumps({"pid": 2**22 + 11, "host": platform.node()}))
    elif state == "garbage-lock":
        (out / LOCK_NAME).write_bytes(b"\x00\xff garbage")
        expect = "error"
    elif state == "file":
        out.rmdir()
        out.write_text("a file")
        expect = "error"
    elif state == "unwritable":
        out = Path("/proc/psb-fuzz-run")
        expect = "error"
    elif state == "args-only":
        (out / "args.json").write_text("{}")
    flags = [["--resume"], ["--overwrite"], [], ["--resume", "--overwrite"]][int(rng.integers(4))] if psb else \
        [["--overwrite"], [], ["--resume-from", str(out / "model.zip")]][int(rng.integers(3))]
    places = {"@OUT": str(out), "@ROLLOUTS": str(fixtures.rollouts)}
    argv = [places.get(word, word) for word in CLI_BASE[script]] + flags
    if state in ("half-written", "finished-ckpt") and not flags:
        expect = "error"  # a run is there: --resume or --overwrite must say what to do with it
    # replaced by --overwrite and continued by --resume; args.json alone is not a run (a start's first file)
    may_change = {"psb.ckpt", "train_state.pt", "model.zip", "args.json", "metrics.json"} \
        if "--overwrite" in flags or "--resume" in flags or "--resume-from" in flags else {"args.json"}
    return Case(f"rundir.{_name(script)}", f"{state} {' '.join(flags)}", lambda: _run_cli(script, argv), expect,
                inputs=[folder, fixtures.rollouts], may_change=may_change, cli=True)


# -------------------------------------------------------------------------------------------------- registry
EntryPoint = Callable[[np.random.Generator, Fixtures], Case]
ENTRY_POINTS: dict[str, tuple[EntryPoint, float]] = {
    "frames.pipeline": (case_pipeline, 8),
    "frames.preprocess": (case_preprocess, 8),
    "frames.streaming": (case_streaming, 10),
    "frames.model_encode": (case_model_encode, 6),
    "frames.obs_wrapper": (case_obs_wrapper, 8),
    "frames.vec_wrapper": (case_vec_wrapper, 8),
    "checkpoint.load": (case_checkpoint, 10),
    "resume.train_state": (case_train_state, 6),
    "rollouts.read": (case_rollouts_read, 8),
    "rollouts.collect": (case_rollouts_collect, 3),
    **{f"cli.{_name(script)}": ((lambda s: lambda rng, fx: case_cli(rng, fx, s))(script), 3)
       for script in CLI_BASE},
    **{f"rundir.{_name(script)}": ((lambda s: lambda rng, fx: case_run_dir(rng, fx, s))(script), 1)
       for script in ("pretrain/train_psb.py", "agents/train_ppo.py")},
}
"""Every entry point with its weight (its share of the cases; slow ones get less)."""


def _pick(rng: np.random.Generator, names: list[str]) -> str:
    weights = np.array([ENTRY_POINTS[name][1] for name in names], dtype=float)
    return names[int(rng.choice(len(names), p=weights / weights.sum()))]


def run_cases(cases: int, seed: int = 0, entry_points: list[str] | None = None, workdir: Path | None = None,
              progress: bool = False) -> dict[str, Any]:
    """Generate and run ``cases`` cases.

    :param cases: how many.
    :param seed: the generator's seed: the same seed gives the same cases.
    :param entry_points: a subset of :data:`ENTRY_POINTS` (default: all); every one is run at least once when
        ``cases`` allows.
    :param workdir: where fixtures and case files go (default: a temporary folder, removed at the end).
    :param progress: print a line every 500 cases.
    :return: ``{"cases", "by_entry_point": {name: {"cases", "errors", "successes", "failures"}}, "failures": [...],
        "seconds"}``.
    """
    names = list(entry_points or ENTRY_POINTS)
    unknown = sorted(set(names) - set(ENTRY_POINTS))
    if unknown:
        raise ValueError(f"unknown entry points {unknown}; known: {sorted(ENTRY_POINTS)}")
    rng = np.random.default_rng(seed)
    order = names[:cases] + [_pick(rng, names) for _ in range(max(0, cases - len(names)))]
    torch.set_num_threads(1)
    stats = {name: {"cases": 0, "successes": 0, "errors": 0, "failures": 0} for name in names}
    failures: list[dict[str, Any]] = []
    started = time.perf_counter()
    with contextlib.ExitStack() as stack:
        root = workdir or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="psb-fuzz-")))
        fixtures = Fixtures(Path(root))
        for index, name in enumerate(order):
            case_rng = np.random.default_rng([seed, index])
            try:
                case = ENTRY_POINTS[name][0](case_rng, fixtures)
            except Exception as error:
                failures.append({"index": index, "entry_point": name, "case": "(generation)",
                                 "problem": f"{type(error).__name__}: {error}"})
                stats[name]["failures"] += 1
                continue
            outcome = _classify(case)
            stats[name]["cases"] += 1
            if outcome["problem"] is not None:
                stats[name]["failures"] += 1
                failures.append({"index": index, "entry_point": name, "case": case.description,
                                 "expect": case.expect, "problem": outcome["problem"]})
            else:
                stats[name][outcome["kind"]] += 1
            if progress and (index + 1) % 500 == 0:
                print(f"{index + 1}/{cases} cases, {len(failures)} failures, "
                      f"{time.perf_counter() - started:.0f} s", flush=True)
            with contextlib.suppress(OSError):
                shutil.rmtree(fixtures.root / "cases")
    return {"cases": len(order), "by_entry_point": stats, "failures": failures,
            "seconds": round(time.perf_counter() - started, 1)}


def _classify(case: Case) -> dict[str, Any]:
    """Run a case and say whether it succeeded or erred, and any problem."""
    kind = {"value": "successes"}

    original = case.run

    def run() -> Any:
        try:
            result = original()
        except BaseException:
            kind["value"] = "errors"
            raise
        if case.cli and result[0] != 0:
            kind["value"] = "errors"
        return result

    problem = run_case(dataclasses.replace(case, run=run))
    return {"kind": kind["value"], "problem": problem}


# ---------------------------------------------------------------------------------------------- command line
def machine() -> dict[str, Any]:
    """The machine a result was measured on."""
    return {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
            "cpu_count": os.cpu_count(), "python": platform.python_version(), "torch": torch.__version__,
            "torch_threads": torch.get_num_threads()}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--cases", type=int, default=1000, help="number of cases (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the case generator (default 0)")
    parser.add_argument("--entry-points", nargs="*", default=None, help=f"a subset of: {' '.join(ENTRY_POINTS)}")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results" / "fuzz.json"), help="results JSON")
    args = parser.parse_args(argv)
    if args.cases < 1:
        parser.error(f"--cases must be >= 1, got {args.cases}")
    results = run_cases(args.cases, args.seed, args.entry_points, progress=True)
    record = {
        "benchmark": "fuzz",
        "command": "python benchmarks/fuzz.py " + " ".join(sys.argv[1:] if argv is None else argv),
        "date": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "commit": repository_commit(ROOT),
        "machine": machine(),
        "seed": args.seed,
        **results,
    }
    from psb_rl.utils import write_json

    write_json(args.out, record)
    width = max(len(name) for name in results["by_entry_point"])
    print(f"{'entry point':<{width}} {'cases':>6} {'ok':>6} {'refused':>7} {'failures':>8}")
    for name, row in results["by_entry_point"].items():
        print(f"{name:<{width}} {row['cases']:>6} {row['successes']:>6} {row['errors']:>7} {row['failures']:>8}")
    print(f"{results['cases']} cases in {results['seconds']} s: {len(results['failures'])} failures -> {args.out}")
    for failure in results["failures"][:20]:
        print(f"  [{failure['entry_point']}] {failure['case']}: {failure['problem'].splitlines()[0]}")
    return 1 if results["failures"] else 0


if __name__ == "__main__":
    sys.exit(main())

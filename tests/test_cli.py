"""Tests of psb_rl.cli helpers that are not covered through the scripts' own tests."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pytest

from psb_rl.cli import parse_env_kwargs


def test_parse_env_kwargs() -> None:
    assert parse_env_kwargs(None) == {} and parse_env_kwargs("") == {}
    assert parse_env_kwargs('{"agent_start": "random", "spacing": 2}') == {"agent_start": "random", "spacing": 2}
    with pytest.raises(ValueError, match=r"--env-kwargs must be a JSON object.*\[1, 2\]"):
        parse_env_kwargs("[1, 2]")
    with pytest.raises(ValueError, match="--layout must be a JSON object"):
        parse_env_kwargs("{spacing: 2}", flag="--layout")  # not JSON: keys need quotes


def test_run_main_turns_user_mistakes_into_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    from psb_rl.checkpoint import CheckpointError
    from psb_rl.cli import run_main

    def fails(error: BaseException):
        def main(argv):
            raise error
        return main

    assert run_main(fails(CheckpointError("x.ckpt is corrupted;\n  re-train it"))) == 2
    assert capsys.readouterr().err == "error: x.ckpt is corrupted; re-train it\n"
    assert run_main(fails(FileNotFoundError(2, "No such file or directory", "data/x"))) == 2
    assert capsys.readouterr().err == "error: [Errno 2] No such file or directory: 'data/x'\n"
    assert run_main(lambda argv: 3) == 3 and run_main(lambda argv: {"result": 1}) == 0
    with pytest.raises(RuntimeError):  # a bug is not a user mistake: its traceback is kept
        run_main(fails(RuntimeError("bug")))


@dataclass
class _Args:
    pooling: Literal["transformer", "deepsets"] = "transformer"
    """how slots are pooled"""
    env: str | None = None
    """environment id (default: the run's)"""


def test_parser_mistakes_are_one_line_and_defaults_are_shown_once(capsys: pytest.CaptureFixture[str]) -> None:
    from psb_rl.cli import parse_dataclass

    with pytest.raises(SystemExit) as exit_info:
        parse_dataclass(_Args, ["--pooling", "mean"])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: argument --pooling: invalid choice: 'mean'")
    with pytest.raises(SystemExit):
        parse_dataclass(_Args, ["--help"])
    out = " ".join(capsys.readouterr().out.split())
    assert "{transformer,deepsets}" in out and "(default: 'transformer')" in out
    assert "environment id (default: the run's)" in out and "(default: None)" not in out


def test_unknown_env_id_is_a_user_mistake(capsys: pytest.CaptureFixture[str]) -> None:
    import gymnasium as gym

    from psb_rl.cli import run_main

    assert run_main(lambda argv: gym.make("NoSuchEnv-v0")) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and err.startswith("error: ") and "NoSuchEnv" in err


def _script(path: str):
    """A script's module (its ``main(argv)``), imported from the repository."""
    import importlib
    import importlib.util
    import sys
    from pathlib import Path

    if path.startswith("agents/"):
        return importlib.import_module(path[:-3].replace("/", "."))
    name = Path(path).stem + "_script"
    if name not in sys.modules:
        spec = importlib.util.spec_from_file_location(name, Path(__file__).resolve().parents[1] / path)
        module = importlib.util.module_from_spec(spec)
        sys.modules[name] = module  # dataclasses look their module up
        spec.loader.exec_module(module)
    return sys.modules[name]


@pytest.mark.parametrize(("script", "argv", "flag"), [
    ("pretrain/train_psb.py", ["--steps", "-5"], "--steps"),
    ("pretrain/train_psb.py", ["--batch-size", "0"], "--batch-size"),
    ("pretrain/train_psb.py", ["--val-fraction", "1.5"], "--val-fraction"),
    ("pretrain/train_psb.py", ["--image-size", "32", "0"], "--image-size"),
    ("agents/train_ppo.py", ["--n-envs", "0"], "--n-envs"),
    ("agents/train_ppo.py", ["--total-steps", "-100"], "--total-steps"),
    ("agents/train_ppo.py", ["--n-envs", "1", "--n-steps", "1"], "--n-steps"),
    ("agents/evaluate.py", ["--episodes", "0"], "--episodes"),
    ("pretrain/evaluate.py", ["--clips", "0"], "--clips"),
    ("pretrain/collect_rollouts.py", ["--episodes", "0"], "--episodes"),
    ("pretrain/collect_rollouts.py", ["--crop", "0", "0", "-1", "0"], "--crop"),
])
def test_values_out_of_range_are_one_line_before_any_directory(tmp_path, capsys: pytest.CaptureFixture[str],
                                                               script: str, argv: list[str], flag: str) -> None:
    from psb_rl.cli import run_main

    out = tmp_path / "out"
    out_flag = ["--out", str(out / "metrics.json")] if script == "pretrain/evaluate.py" else ["--out", str(out)]
    with pytest.raises(SystemExit) as exit_info:
        run_main(_script(script).main, [*argv, *out_flag])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and flag in err, err
    assert not out.exists()


def test_bounded_fields_are_checked_in_python_too() -> None:
    from psb_rl.cli import bounded, check_bounds, parse_dataclass

    @dataclass
    class Args:
        steps: int = bounded(10, min=1)
        """optimizer steps"""
        fraction: float = bounded(0.1, min=0, lt=1)
        sizes: list[int] | None = bounded(None, min=1)

    assert parse_dataclass(Args, ["--sizes", "3", "4"]).sizes == [3, 4]
    check_bounds(Args())
    with pytest.raises(ValueError, match=r"--steps must be >= 1, got 0"):
        check_bounds(Args(steps=0))
    with pytest.raises(ValueError, match=r"--fraction must be < 1, got 1"):
        check_bounds(Args(fraction=1))
    with pytest.raises(ValueError, match=r"--sizes must be >= 1, got 0"):
        check_bounds(Args(sizes=[2, 0]))


def test_a_failed_start_leaves_no_run_directory_and_no_lone_args_json(tmp_path,
                                                                     capsys: pytest.CaptureFixture[str]) -> None:
    from psb_rl.cli import run_main

    train_ppo = _script("agents/train_ppo.py")
    out = tmp_path / "ppo"
    common = ["--encoder", "state", "--n-envs", "1", "--no-progress-bar", "--out", str(out)]
    assert run_main(train_ppo.main, [*common, "--env-kwargs", '{"obs_mode": "bogus"}']) == 2  # after args.json
    assert "obs_mode" in capsys.readouterr().err and not out.exists()
    assert run_main(train_ppo.main, [*common, "--env-kwargs", '{"no_such_argument": 1}']) == 2
    assert "--env-kwargs" in capsys.readouterr().err and not out.exists()
    out.mkdir()
    (out / "notes.txt").write_text("mine")
    assert run_main(train_ppo.main, [*common, "--env-kwargs", '{"obs_mode": "bogus"}']) == 2
    assert sorted(p.name for p in out.iterdir()) == ["notes.txt"]  # what was there stays; nothing is added
    psb = tmp_path / "psb"
    assert run_main(_script("pretrain/train_psb.py").main,
                    ["--data", str(tmp_path / "no-data"), "--collect-episodes", "0", "--out", str(psb)]) == 2
    assert "no rollouts found" in capsys.readouterr().err and not psb.exists()


@pytest.mark.parametrize("value", ["inf", "nan", "1e400"])
def test_bounded_floats_must_be_finite(capsys: pytest.CaptureFixture[str], value: str) -> None:
    from psb_rl.cli import parse_dataclass
    from psb_rl.training import TrainArgs

    with pytest.raises(SystemExit) as exit_info:
        parse_dataclass(TrainArgs, ["--lr", value])
    err = capsys.readouterr().err
    assert exit_info.value.code == 2 and "--lr: must be a finite number" in err and err.count("\n") == 1


@pytest.mark.parametrize("device", ["none", "gpu9", "cuda:x"])
def test_a_device_that_is_no_device_is_one_line(capsys: pytest.CaptureFixture[str], device: str) -> None:
    from psb_rl.utils import resolve_device

    with pytest.raises(ValueError, match=rf"device '{device}' is not a torch device; use auto, cpu, cuda"):
        resolve_device(device)

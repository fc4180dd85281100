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

"""Tests of psb_rl.cli helpers that are not covered through the scripts' own tests."""

from __future__ import annotations

import pytest

from psb_rl.cli import parse_env_kwargs


def test_parse_env_kwargs() -> None:
    assert parse_env_kwargs(None) == {} and parse_env_kwargs("") == {}
    assert parse_env_kwargs('{"agent_start": "random", "spacing": 2}') == {"agent_start": "random", "spacing": 2}
    with pytest.raises(ValueError, match=r"--env-kwargs must be a JSON object.*\[1, 2\]"):
        parse_env_kwargs("[1, 2]")
    with pytest.raises(ValueError, match="--layout must be a JSON object"):
        parse_env_kwargs("{spacing: 2}", flag="--layout")  # not JSON: keys need quotes

"""Tests of psb_rl.contrib.mirror: mirror transforms, the mirrored slot wrapper and MirroredPPO."""

from __future__ import annotations

import copy
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ToyImageEnv
from stable_baselines3 import PPO
from stable_baselines3.common.env_util import make_vec_env
from stable_baselines3.common.vec_env import DummyVecEnv

from psb_rl import PSBAutoencoder, PSBConfig, SlotTransformerExtractor, VecPSBWrapper
from psb_rl.contrib.mirror import (
    MIRRORS,
    FirstCopyExtractor,
    MirroredPPO,
    MirroredVecPSBWrapper,
    action_permutation,
    mirror_frames,
    mirror_state,
    select_copy,
)

TINY = {"image_size": 32, "num_slots": 4, "slot_dim": 32, "num_blocks": 1, "num_heads": 2, "window": 3}

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


class MirroredFrames(gym.ObservationWrapper):
    def __init__(self, env: gym.Env, mirror: str) -> None:
        super().__init__(env)
        self.mirror = mirror

    def observation(self, observation: np.ndarray) -> np.ndarray:
        return mirror_frames(observation[None], self.mirror)[0]


@pytest.fixture(scope="module")
def model() -> PSBAutoencoder:
    torch.manual_seed(0)
    return PSBAutoencoder(PSBConfig(**TINY)).eval()


def test_action_permutations_of_the_builtin_actions() -> None:
    # actions: 0 no-op, 1 up, 2 down, 3 left, 4 right
    assert action_permutation("hflip").tolist() == [0, 1, 2, 4, 3]
    assert action_permutation("vflip").tolist() == [0, 2, 1, 3, 4]
    assert action_permutation("rot180").tolist() == [0, 2, 1, 4, 3]
    with pytest.raises(ValueError, match="unknown mirror 'flip'"):
        action_permutation("flip")
    with pytest.raises(ValueError, match="not closed under the mirror 'hflip'"):
        action_permutation("hflip", deltas=[(0, 0), (1, 0)])


def test_mirror_frames_in_both_layouts() -> None:
    frames = np.random.default_rng(0).integers(0, 256, (2, 5, 7, 3), dtype=np.uint8)
    np.testing.assert_array_equal(mirror_frames(frames, "hflip"), frames[:, :, ::-1])
    np.testing.assert_array_equal(mirror_frames(frames, "vflip"), frames[:, ::-1])
    np.testing.assert_array_equal(mirror_frames(frames, "rot180"), np.rot90(frames, 2, axes=(1, 2)))
    chw = np.moveaxis(frames, -1, 1)
    for mirror in MIRRORS:
        np.testing.assert_array_equal(mirror_frames(chw, mirror, channels_last=False), np.moveaxis(mirror_frames(frames, mirror), -1, 1))
        np.testing.assert_array_equal(mirror_frames(mirror_frames(frames, mirror), mirror), frames)


def test_mirror_state_keeps_padding_and_other_features() -> None:
    objects = np.zeros((3, 6), dtype=np.float32)
    objects[:2] = [[0.25, 0.75, 0.1, -0.2, 0.3, 1.0], [0.5, 0.1, -0.4, 0.0, 0.7, 1.0]]
    out = mirror_state(objects, "hflip")
    np.testing.assert_allclose(out[:2, :4], [[0.75, 0.75, -0.1, -0.2], [0.5, 0.1, 0.4, 0.0]])
    np.testing.assert_array_equal(out[:, 4:], objects[:, 4:])
    np.testing.assert_array_equal(out[2], 0.0)  # padded row untouched
    np.testing.assert_allclose(mirror_state(objects, "rot180")[:2, :4], [[0.75, 0.25, -0.1, 0.2], [0.5, 0.9, 0.4, -0.0]])


@pytest.mark.parametrize("mirror", list(MIRRORS))
def test_oddoneout_is_symmetric_under_each_mirror(mirror: str) -> None:
    """A mirrored twin of an episode, driven by the mirrored actions, stays its exact mirror image."""
    import psb_rl  # noqa: F401  (registers PSB/ ids)

    sx, sy = MIRRORS[mirror]
    perm = action_permutation(mirror)
    rng = np.random.default_rng(1)
    for seed in range(5):
        env = gym.make("PSB/OddOneOut-v0", obs_mode="state").unwrapped
        obs, _ = env.reset(seed=seed)
        twin = copy.deepcopy(env)
        size = twin.image_size
        for axis, sign in enumerate((sx, sy)):
            if sign < 0:
                twin.pos[:, axis] = size - twin.pos[:, axis]
                twin.vel[:, axis] *= -1
        twin_obs = twin._state()
        np.testing.assert_allclose(twin_obs, mirror_state(obs, mirror), atol=1e-6)
        for _ in range(60):
            action = int(rng.integers(5))
            obs, reward, terminated, _, _ = env.step(action)
            twin_obs, twin_reward, twin_terminated, _, _ = twin.step(int(perm[action]))
            np.testing.assert_allclose(twin_obs, mirror_state(obs, mirror), atol=1e-5)
            assert (twin_reward, twin_terminated) == (reward, terminated)
            if terminated:
                break


def test_mirrored_wrapper_streams_each_mirror_like_a_plain_wrapper(model: PSBAutoencoder) -> None:
    lengths = [2, 3]

    def venv(mirror: str | None) -> DummyVecEnv:
        makers = [
            (lambda n=n: ToyImageEnv(episode_length=n)) if mirror is None else (lambda n=n: MirroredFrames(ToyImageEnv(episode_length=n), mirror))
            for n in lengths
        ]
        vec = DummyVecEnv(makers)
        vec.seed(0)
        return vec

    mirrored = MirroredVecPSBWrapper(venv(None), checkpoint=model)
    assert mirrored.observation_space.shape == (4, 4, 32)
    plain = {m: VecPSBWrapper(venv(m), checkpoint=model) for m in (None, *MIRRORS)}
    copies = [None, *MIRRORS]
    obs = mirrored.reset()
    expected = {m: w.reset() for m, w in plain.items()}
    actions = np.zeros(len(lengths), dtype=np.int64)
    dones_seen = 0
    for step in range(8):
        for g, m in enumerate(copies):
            np.testing.assert_allclose(obs[:, g], expected[m], atol=1e-5, err_msg=f"copy {g} at step {step}")
        obs, _, dones, infos = mirrored.step(actions)
        results = {m: w.step(actions) for m, w in plain.items()}
        expected = {m: r[0] for m, r in results.items()}
        for i in np.flatnonzero(dones):
            dones_seen += 1
            for g, m in enumerate(copies):  # the finished episode's last slots, with its history
                np.testing.assert_allclose(
                    infos[i]["terminal_observation"][g], results[m][3][i]["terminal_observation"], atol=1e-5
                )
    assert dones_seen >= 5


def test_first_copy_extractor_is_the_plain_extractor_on_copy_zero() -> None:
    torch.manual_seed(0)
    stacked = gym.spaces.Box(-np.inf, np.inf, (4, 5, 8), np.float32)
    first = FirstCopyExtractor(stacked, features_dim=16, d_model=16, num_layers=1, num_heads=2)
    plain = SlotTransformerExtractor(
        gym.spaces.Box(-np.inf, np.inf, (5, 8), np.float32), features_dim=16, d_model=16, num_layers=1, num_heads=2
    )
    plain.load_state_dict(first.state_dict())  # same parameters: a mirrored agent acts on the plain wrapper
    obs = torch.randn(3, 4, 5, 8)
    torch.testing.assert_close(first(obs), plain(obs[:, 0]))
    changed = obs.clone()
    changed[:, 1:] = 0.0
    torch.testing.assert_close(first(changed), first(obs))  # the mirror copies are not read
    with pytest.raises(ValueError, match="Box\\(copies, num_slots, slot_dim\\)"):
        FirstCopyExtractor(gym.spaces.Box(-1, 1, (5, 8), np.float32))


def _state_agent(agent_class: type, seed: int = 0, **kwargs) -> PPO:
    import psb_rl  # noqa: F401  (registers PSB/ ids)

    venv = make_vec_env("PSB/OddOneOut-v0", n_envs=2, seed=seed, env_kwargs={"obs_mode": "state"})
    policy_kwargs = {
        "features_extractor_class": SlotTransformerExtractor,
        "features_extractor_kwargs": {"features_dim": 16, "d_model": 16, "num_layers": 1, "num_heads": 2, "mask_feature_index": -1},
    }
    return agent_class(
        "MlpPolicy", venv, n_steps=32, batch_size=32, n_epochs=2, seed=seed, device="cpu", policy_kwargs=policy_kwargs, **kwargs
    )


def _parameters(agent: PPO) -> list[torch.Tensor]:
    return [p.detach().clone() for p in agent.policy.parameters()]


def test_mirrored_ppo_is_plain_ppo_before_mirror_from() -> None:
    def trained(agent_class: type, **kwargs) -> PPO:  # built and trained in turn: the seed fixes both
        agent = _state_agent(agent_class, **kwargs)
        agent.learn(128)
        return agent

    plain = trained(PPO)
    late = trained(MirroredPPO, mirror_from=10_000, observation_mirror=mirror_state)
    early = trained(MirroredPPO, mirror_from=0, observation_mirror=mirror_state)
    for a, b in zip(_parameters(plain), _parameters(late), strict=True):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert any(not torch.equal(a, b) for a, b in zip(_parameters(plain), _parameters(early), strict=True))


def test_mirrored_ppo_update_sees_the_mirror_images(monkeypatch: pytest.MonkeyPatch) -> None:
    agent = _state_agent(MirroredPPO, mirror_from=65, observation_mirror=mirror_state)
    seen: list[dict] = []

    def record(self: PPO) -> None:
        buf = self.rollout_buffer
        seen.append({k: np.array(getattr(buf, k)) for k in ("observations", "actions", "log_probs", "advantages", "returns")})
        seen[-1]["n_envs"], seen[-1]["batch_size"] = buf.n_envs, self.batch_size

    monkeypatch.setattr(PPO, "train", record)
    agent.learn(128)  # two rollouts of 2 envs x 32 steps; mirrors from the second
    assert [s["n_envs"] for s in seen] == [2, 8] and [s["batch_size"] for s in seen] == [32, 128]
    assert agent.rollout_buffer.n_envs == 2 and agent.batch_size == 32  # restored for the next rollout
    data = seen[1]
    original = {k: v[:, :2] for k, v in data.items() if isinstance(v, np.ndarray)}
    for g, mirror in enumerate(MIRRORS, start=1):
        copy_g = {k: v[:, 2 * g : 2 * g + 2] for k, v in data.items() if isinstance(v, np.ndarray)}
        np.testing.assert_allclose(copy_g["observations"], mirror_state(original["observations"], mirror))
        np.testing.assert_array_equal(copy_g["actions"], action_permutation(mirror)[original["actions"].astype(int)])
        for key in ("log_probs", "advantages", "returns"):  # behaviour log-probs of the original actions
            np.testing.assert_array_equal(copy_g[key], original[key])


def test_select_copy_puts_the_mirror_in_front() -> None:
    obs = np.random.default_rng(0).standard_normal((2, 3, 4, 5, 6)).astype(np.float32)  # (T, B, 1 + M, N, D)
    out = select_copy(obs, "vflip", mirrors=tuple(MIRRORS))
    np.testing.assert_array_equal(out[:, :, 0], obs[:, :, 2])
    np.testing.assert_array_equal(out[:, :, 1:], obs[:, :, 1:])


def test_mirror_from_validation() -> None:
    with pytest.raises(ValueError, match="mirror_from must be >= 0"):
        _state_agent(MirroredPPO, mirror_from=-1, observation_mirror=mirror_state)
    venv = DummyVecEnv([lambda: ToyImageEnv(episode_length=3)])
    with pytest.raises(ValueError, match="Discrete\\(5\\)"):
        MirroredPPO("MlpPolicy", venv, mirror_from=0, observation_mirror=mirror_state, device="cpu")


def test_train_ppo_mirror_from_slots_end_to_end(tmp_path: Path) -> None:
    import dataclasses

    from agents.evaluate import EvalArgs, evaluate
    from agents.train_ppo import Args, load_agent, train
    from psb_rl import save_checkpoint

    torch.manual_seed(0)
    checkpoint = tmp_path / "psb.ckpt"
    save_checkpoint(PSBAutoencoder(PSBConfig(**TINY)), checkpoint)
    args = Args(
        env="PSB/OddOneOut-v0", encoder="slots", checkpoint=str(checkpoint), n_envs=2, total_steps=256, n_steps=64,
        batch_size=64, n_epochs=1, eval_freq=0, eval_episodes=1, features_dim=32, d_model=32, num_layers=1,
        num_heads=2, out=str(tmp_path / "run"), device="cpu", progress_bar=False, tensorboard=False, mirror_from=128,
    )
    result = train(args)
    assert result["timesteps"] == 256
    # acting needs only the plain wrapper: the saved agent loads into a plain network
    agent = load_agent(result["model_path"], args, torch.device("cpu"))
    assert agent.observation_space.shape == (4, 32) and not isinstance(agent, MirroredPPO)
    out = evaluate(EvalArgs(run=result["out_dir"], episodes=1, gif="none"))
    assert out["episodes"] == 1
    with pytest.raises(ValueError, match="needs ground-truth object states"):
        train(dataclasses.replace(args, env="CartPole-v1", encoder="state", out=str(tmp_path / "bad")))


def test_contrib_exports_the_mirrored_pieces_together():
    import psb_rl
    import psb_rl.contrib as contrib
    from psb_rl.contrib import mirror

    assert set(contrib.__all__) == {"MirroredPPO", "MirroredVecPSBWrapper", "FirstCopyExtractor"}
    for name in contrib.__all__:
        assert getattr(contrib, name) is getattr(mirror, name)
        assert name not in psb_rl.__all__

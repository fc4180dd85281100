"""Tests of psb_rl.wrappers: PSBObservationWrapper and VecPSBWrapper."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from conftest import ToyImageEnv
from gymnasium.utils.env_checker import check_env as gym_check_env
from stable_baselines3.common.env_checker import check_env as sb3_check_env
from stable_baselines3.common.vec_env import DummyVecEnv, SubprocVecEnv

from psb_rl import PSBAutoencoder, PSBConfig, PSBObservationWrapper, StreamingEncoder, VecPSBWrapper

TINY = {"image_size": 32, "num_slots": 4, "slot_dim": 32, "num_blocks": 1, "num_heads": 2, "window": 3}


class StateEnv(ToyImageEnv):
    def __init__(self) -> None:
        super().__init__()
        self.observation_space = gym.spaces.Box(-1, 1, (4,), np.float32)


pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


@pytest.fixture(scope="module")
def model() -> PSBAutoencoder:
    torch.manual_seed(0)
    return PSBAutoencoder(PSBConfig(**TINY)).eval()


def test_observation_wrapper_space_and_dtype(model: PSBAutoencoder) -> None:
    env = PSBObservationWrapper(ToyImageEnv(), checkpoint=model)
    assert env.observation_space == gym.spaces.Box(-np.inf, np.inf, (4, 32), np.float32)
    obs, _ = env.reset(seed=0)
    assert obs.dtype == np.float32 and obs.shape == (4, 32)
    assert not any(p.requires_grad for p in model.parameters()) and not model.training


def test_observation_wrapper_matches_streaming_encoder(model: PSBAutoencoder) -> None:
    base = ToyImageEnv(episode_length=100)
    env = PSBObservationWrapper(base, checkpoint=model)
    got = [env.reset(seed=1)[0]]
    got += [env.step(0)[0] for _ in range(6)]
    ref = StreamingEncoder(model, num_envs=1)
    for frame, slots in zip(base.emitted, got):
        np.testing.assert_allclose(slots, ref.step(frame[None])[0].numpy(), atol=1e-5)
    # the streaming slots are the parallel model's slots
    video = torch.as_tensor(np.stack(base.emitted))[None]
    from psb_rl.preprocessing import preprocess_frames

    parallel = model.encode(preprocess_frames(video, 32))[0].detach().numpy()
    np.testing.assert_allclose(np.stack(got), parallel, atol=1e-4)


def test_observation_wrapper_reset_clears_state(model: PSBAutoencoder) -> None:
    env = PSBObservationWrapper(ToyImageEnv(episode_length=100), checkpoint=model)
    first, _ = env.reset(seed=3)
    for _ in range(4):
        env.step(1)
    again, _ = env.reset(seed=3)
    np.testing.assert_array_equal(first, again)
    fresh = PSBObservationWrapper(ToyImageEnv(episode_length=100), checkpoint=model).reset(seed=3)[0]
    np.testing.assert_array_equal(first, fresh)


def test_observation_wrapper_keep_pixels(model: PSBAutoencoder) -> None:
    env = PSBObservationWrapper(ToyImageEnv(), checkpoint=model, keep_pixels=True)
    assert isinstance(env.observation_space, gym.spaces.Dict)
    obs, _ = env.reset(seed=0)
    assert obs["slots"].shape == (4, 32) and obs["pixels"].shape == (24, 24, 3)
    assert obs["pixels"].dtype == np.uint8
    gym_check_env(env, skip_render_check=True)


def test_checkers_pass(model: PSBAutoencoder) -> None:
    gym_check_env(PSBObservationWrapper(ToyImageEnv(), checkpoint=model), skip_render_check=True)
    sb3_check_env(PSBObservationWrapper(ToyImageEnv(), checkpoint=model), warn=False)


def test_non_image_space_error(model: PSBAutoencoder) -> None:
    with pytest.raises(ValueError, match="AddRenderObservation"):
        PSBObservationWrapper(StateEnv(), checkpoint=model)
    with pytest.raises(ValueError, match="AddRenderObservation"):
        VecPSBWrapper(DummyVecEnv([StateEnv]), checkpoint=model)


def test_observation_wrapper_in_gymnasium_vector_env(model: PSBAutoencoder) -> None:
    venv = gym.vector.SyncVectorEnv(
        [lambda: PSBObservationWrapper(ToyImageEnv(episode_length=3), checkpoint=model) for _ in range(2)]
    )
    obs, _ = venv.reset(seed=0)
    assert obs.shape == (2, 4, 32) and obs.dtype == np.float32
    for _ in range(5):
        obs, *_ = venv.step(np.zeros(2, dtype=np.int64))
    assert np.isfinite(obs).all()


def test_vec_wrapper_can_keep_terminal_observations_of_truncated_episodes_only(model: PSBAutoencoder) -> None:
    """Episodes that terminate (length 2) lose their terminal entry and cost no second encoder call; episodes cut
    by a time limit (length 3) keep it; the observations are those of the default wrapper."""

    def make(length: int, limit: int | None) -> gym.Env:
        env = ToyImageEnv(episode_length=length)
        return gym.wrappers.TimeLimit(env, limit) if limit else env

    fns = [lambda: make(2, None), lambda: make(10, 3)]
    lean = VecPSBWrapper(DummyVecEnv(fns), checkpoint=model, terminal_observations="truncated")
    full = VecPSBWrapper(DummyVecEnv(fns), checkpoint=model)
    calls = []
    step_encoder = lean._step_encoder
    lean._step_encoder = lambda *a, **k: calls.append(1) or step_encoder(*a, **k)  # type: ignore[method-assign]
    lean.seed(0), full.seed(0)
    np.testing.assert_allclose(lean.reset(), full.reset(), atol=1e-6)
    for step in range(1, 7):
        calls.clear()
        obs, _, dones, infos = lean.step(np.zeros(2, dtype=np.int64))
        reference, _, reference_dones, reference_infos = full.step(np.zeros(2, dtype=np.int64))
        np.testing.assert_allclose(obs, reference, atol=1e-5)
        assert list(dones) == list(reference_dones) == [step % 2 == 0, step % 3 == 0]
        assert "terminal_observation" not in infos[0]
        if dones[1]:
            np.testing.assert_allclose(infos[1]["terminal_observation"], reference_infos[1]["terminal_observation"],
                                       atol=1e-5)
        assert len(calls) == (2 if dones[1] else 1)
    with pytest.raises(ValueError, match="terminal_observations"):
        VecPSBWrapper(DummyVecEnv(fns), checkpoint=model, terminal_observations="some")


def test_vec_wrapper_terminal_observations(model: PSBAutoencoder) -> None:
    lengths = [2, 3, 5]
    venv = VecPSBWrapper(
        DummyVecEnv([lambda n=n: ToyImageEnv(episode_length=n) for n in lengths]), checkpoint=model
    )
    assert venv.observation_space == gym.spaces.Box(-np.inf, np.inf, (4, 32), np.float32)
    venv.seed(0)
    obs = venv.reset()
    envs = venv.venv.envs
    refs = [StreamingEncoder(model, num_envs=1) for _ in lengths]
    seen = [0] * len(lengths)

    def ref_step(i: int) -> np.ndarray:
        frame = envs[i].emitted[seen[i]]
        seen[i] += 1
        return refs[i].step(frame[None])[0].numpy()

    for i in range(len(lengths)):
        np.testing.assert_allclose(obs[i], ref_step(i), atol=1e-5)
    num_done = 0
    for _ in range(12):
        obs, _, dones, infos = venv.step(np.zeros(len(lengths), dtype=np.int64))
        assert obs.dtype == np.float32
        for i, done in enumerate(dones):
            if done:
                num_done += 1
                terminal = infos[i]["terminal_observation"]
                assert terminal.dtype == np.float32 and terminal.shape == (4, 32)
                np.testing.assert_allclose(terminal, ref_step(i), atol=1e-5)  # old history
                refs[i].reset()
            np.testing.assert_allclose(obs[i], ref_step(i), atol=1e-5)  # fresh first step when done
    assert num_done >= 8
    assert seen == [len(e.emitted) for e in envs]
    # a done env's first slots equal a brand-new encoder's first-step slots for that frame
    venv.close()


def test_vec_wrapper_reset_resets_all_states(model: PSBAutoencoder) -> None:
    venv = VecPSBWrapper(DummyVecEnv([lambda: ToyImageEnv(episode_length=50)] * 2), checkpoint=model)
    venv.seed(5)
    first = venv.reset()
    for _ in range(3):
        venv.step(np.zeros(2, dtype=np.int64))
    venv.seed(5)
    np.testing.assert_array_equal(venv.reset(), first)
    assert int(venv.encoder.state.step_count.max()) == 1


def test_vec_wrapper_subproc(model: PSBAutoencoder) -> None:
    venv = VecPSBWrapper(
        SubprocVecEnv([lambda n=n: ToyImageEnv(episode_length=n) for n in (2, 3)], start_method="fork"),
        checkpoint=model,
    )
    try:
        obs = venv.reset()
        assert obs.shape == (2, 4, 32)
        for _ in range(4):
            obs, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
            for i in np.flatnonzero(dones):
                assert infos[i]["terminal_observation"].shape == (4, 32)
        assert obs.dtype == np.float32
    finally:
        venv.close()


def test_vec_wrapper_from_checkpoint_file(model: PSBAutoencoder, tmp_path) -> None:
    from psb_rl import save_checkpoint

    path = tmp_path / "psb.ckpt"
    save_checkpoint(model, path)
    venv = VecPSBWrapper(DummyVecEnv([ToyImageEnv]), checkpoint=str(path), device="cpu")
    venv.seed(0)
    a = venv.reset()
    b = VecPSBWrapper(DummyVecEnv([ToyImageEnv]), checkpoint=model)
    b.seed(0)
    np.testing.assert_allclose(a, b.reset(), atol=1e-6)


def test_builtin_envs_check(model: PSBAutoencoder) -> None:
    assert "PSB/OddOneOut-v0" in gym.registry  # registered by import psb_rl
    for env_id in ("PSB/ObjectReach-v0", "PSB/OddOneOut-v0"):
        env = PSBObservationWrapper(gym.make(env_id, obs_mode="pixels").unwrapped, checkpoint=model)
        gym_check_env(env, skip_render_check=True)
        sb3_check_env(PSBObservationWrapper(gym.make(env_id, obs_mode="pixels"), checkpoint=model), warn=False)


def test_observation_wrapper_as_make_vec_env_wrapper_class(model: PSBAutoencoder) -> None:
    from stable_baselines3.common.env_util import make_vec_env

    venv = make_vec_env(
        lambda: ToyImageEnv(episode_length=2),
        n_envs=2,
        seed=0,
        wrapper_class=PSBObservationWrapper,
        wrapper_kwargs={"checkpoint": model},
    )
    obs = venv.reset()
    assert obs.shape == (2, 4, 32) and obs.dtype == np.float32
    for _ in range(2):
        obs, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
    assert dones.all()
    assert all(info["terminal_observation"].shape == (4, 32) for info in infos)


class _FloatCHWEnv(gym.Env):
    """Float CHW frames with declared bounds ``[0, high]`` (high=255: frames that were never scaled)."""

    def __init__(self, high: float) -> None:
        self.observation_space = gym.spaces.Box(0.0, high, (3, 24, 24), np.float32)
        self.action_space = gym.spaces.Discrete(2)

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self.observation_space.sample(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        frame = self.observation_space.sample()
        frame[0, 0, 0] = np.nan
        return frame, 0.0, False, False, {}


def test_float_space_bounds_are_checked_when_the_wrapper_is_built(model: PSBAutoencoder) -> None:
    with pytest.raises(ValueError, match=r"PSBObservationWrapper reads float frames as values in \[0, 1\].*255"):
        PSBObservationWrapper(_FloatCHWEnv(255.0), checkpoint=model)
    with pytest.raises(ValueError, match=r"VecPSBWrapper .*Divide 0\.\.255 frames by 255"):
        VecPSBWrapper(DummyVecEnv([lambda: _FloatCHWEnv(255.0)]), checkpoint=model)
    env = PSBObservationWrapper(_FloatCHWEnv(1.0), checkpoint=model)  # declared [0, 1]: accepted
    assert env.reset(seed=0)[0].shape == (model.config.num_slots, model.config.slot_dim)
    with pytest.raises(ValueError, match="frame of env 0 has non-finite values"):
        env.step(0)  # this env's frames carry a NaN
    lenient = VecPSBWrapper(DummyVecEnv([lambda: _FloatCHWEnv(1.0)] * 2), checkpoint=model, nonfinite="reset")
    lenient.reset()
    with pytest.warns(RuntimeWarning, match="env 0, 1"):
        slots, *_ = lenient.step(np.zeros(2, dtype=np.int64))
    assert np.isfinite(slots).all()


class ChannelsFirstEnv(gym.ObservationWrapper):
    """The toy env's frames as channels-first images: uint8 ``(3, H, W)``, or float ``(3, H, W)`` in [0, 1]."""

    def __init__(self, env: ToyImageEnv, as_float: bool = False) -> None:
        super().__init__(env)
        self.as_float = as_float
        h, w, _ = env.observation_space.shape
        self.observation_space = (gym.spaces.Box(0.0, 1.0, (3, h, w), np.float32) if as_float
                                  else gym.spaces.Box(0, 255, (3, h, w), np.uint8))

    def observation(self, frame: np.ndarray) -> np.ndarray:
        chw = np.ascontiguousarray(frame.transpose(2, 0, 1))
        return (chw / 255.0).astype(np.float32) if self.as_float else chw


def _rollout(env: gym.Env, steps: int) -> np.ndarray:
    obs = [env.reset(seed=5)[0]]
    obs += [env.step(1)[0] for _ in range(steps)]
    return np.stack(obs)


@pytest.mark.parametrize("as_float", [False, True])
def test_observation_wrapper_channels_first_frames(model: PSBAutoencoder, as_float: bool) -> None:
    reference = _rollout(PSBObservationWrapper(ToyImageEnv(episode_length=100), checkpoint=model), 4)
    env = PSBObservationWrapper(ChannelsFirstEnv(ToyImageEnv(episode_length=100), as_float), checkpoint=model)
    assert env.observation_space.shape == (4, 32)
    got = _rollout(env, 4)
    # the same frames in another layout give the same slots (float frames differ by uint8 rounding only)
    np.testing.assert_allclose(got, reference, atol=1e-4)


@pytest.mark.parametrize("as_float", [False, True])
def test_vec_wrapper_channels_first_frames(model: PSBAutoencoder, as_float: bool) -> None:
    def run(make) -> np.ndarray:
        venv = VecPSBWrapper(DummyVecEnv([make, make]), checkpoint=model)
        venv.seed(7)
        obs = [venv.reset()]
        obs += [venv.step(np.array([1, 2]))[0] for _ in range(4)]
        return np.stack(obs)

    reference = run(lambda: ToyImageEnv(episode_length=100))
    got = run(lambda: ChannelsFirstEnv(ToyImageEnv(episode_length=100), as_float))
    assert got.shape == (5, 2, 4, 32)
    np.testing.assert_allclose(got, reference, atol=1e-4)


def test_vec_wrapper_after_vec_transpose_image(model: PSBAutoencoder) -> None:
    from stable_baselines3.common.vec_env import VecTransposeImage

    def run(venv) -> np.ndarray:
        venv = VecPSBWrapper(venv, checkpoint=model)
        venv.seed(3)
        return np.stack([venv.reset(), *(venv.step(np.array([0]))[0] for _ in range(3))])

    make = lambda: ToyImageEnv(episode_length=100)  # noqa: E731
    transposed = VecTransposeImage(DummyVecEnv([make]))  # SB3's channels-first uint8 frames
    assert transposed.observation_space.shape == (3, 24, 24)
    np.testing.assert_allclose(run(transposed), run(DummyVecEnv([make])), atol=1e-5)


# ---------------------------------------------------------------------------------------------- slot geometry


def test_slot_geometry_reads_the_foreground_pixels_each_slot_owns() -> None:
    """An L-shaped red object in the top-right corner, owned by slot 1 together with some background: the
    geometry is that of the object's pixels only (centroid, spread, skew, colour), not of slot 1's mask."""
    from psb_rl.model import GEOMETRY_FEATURES

    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(**TINY, decoder="blob", background_slot=True, difference_input=True)).eval()
    model.set_background(torch.zeros(3, 32, 32))
    masks = torch.zeros(1, 4, 32, 32)
    masks[0, 0] = 1.0
    masks[0, 0, 0:16, 16:32] = 0.0
    masks[0, 1, 0:16, 16:32] = 0.9  # slot 1 owns the whole top-right quarter
    masks[0, 0, 0:16, 16:32] = 0.1
    model.decode = lambda slots: (None, masks, None)  # type: ignore[method-assign]
    frame = torch.zeros(1, 3, 32, 32)
    frame[0, 0, 0:4, 24:32] = 1.0  # a red 4 x 8 bar on top ...
    frame[0, 0, 4:8, 24:26] = 1.0  # ... and a 4 x 2 leg at its left end: mass above and to the left
    geometry = model.slot_geometry(torch.zeros(1, 4, 32), frame)
    assert geometry.shape == (1, 4, len(GEOMETRY_FEATURES))
    features = dict(zip(GEOMETRY_FEATURES, geometry[0, 1].tolist(), strict=True))
    step = 2 / 31  # pixel spacing of the [-1, 1] grid
    ys, xs = torch.nonzero(frame[0, 0] > 0, as_tuple=True)
    ys, xs = -1 + ys.float() * step, -1 + xs.float() * step
    assert features["presence"] == pytest.approx((40 / 1024) ** 0.5)
    assert features["centre_y"] == pytest.approx(ys.mean().item(), abs=1e-5)
    assert features["centre_x"] == pytest.approx(xs.mean().item(), abs=1e-5)
    assert features["spread_y"] == pytest.approx(ys.std(unbiased=False).item(), abs=1e-4)
    assert features["skew_y"] > 0 and features["skew_x"] > 0  # the long tail points down and to the right
    assert (features["red"], features["green"], features["blue"]) == pytest.approx((1.0, 0.0, 0.0))
    assert geometry[0, 2].abs().sum().item() == 0.0  # a slot that owns no foreground reads zeros
    assert geometry[0, 0].abs().sum().item() == 0.0  # the background slot owns no foreground here


def test_slot_geometry_without_a_background_image_counts_every_owned_pixel() -> None:
    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(**TINY)).eval()
    frames = torch.rand(2, 3, 32, 32)
    geometry = model.slot_geometry(model.encode(frames[:, None])[:, 0], frames)
    presence = geometry[..., 0]
    assert torch.allclose(presence.square().sum(-1), torch.ones(2))  # the slots share all pixels


@pytest.mark.parametrize("decoder", ["broadcast", "blob"])
def test_wrappers_append_the_slot_geometry(decoder: str) -> None:
    from psb_rl.model import GEOMETRY_FEATURES
    from psb_rl.preprocessing import preprocess_frames

    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(**TINY, decoder=decoder)).eval()
    extra = len(GEOMETRY_FEATURES)
    env = PSBObservationWrapper(ToyImageEnv(size=32), checkpoint=model, geometry=True)
    plain = PSBObservationWrapper(ToyImageEnv(size=32), checkpoint=model)
    assert env.observation_space.shape == (4, 32 + extra)
    obs, _ = env.reset(seed=0)
    reference, _ = plain.reset(seed=0)
    frame, _ = ToyImageEnv(size=32).reset(seed=0)
    np.testing.assert_array_equal(obs[:, :32], reference)  # the slot vectors are unchanged
    with torch.inference_mode():
        expected = model.slot_geometry(torch.as_tensor(reference)[None], preprocess_frames(frame[None], 32))[0].numpy()
    np.testing.assert_allclose(obs[:, 32:], expected, atol=1e-6)
    assert env.observation_space.contains(obs)
    venv = VecPSBWrapper(DummyVecEnv([lambda: ToyImageEnv(size=32)] * 2), checkpoint=model, geometry=True)
    assert venv.observation_space.shape == (4, 32 + extra)
    batch = venv.reset()
    assert batch.shape == (2, 4, 32 + extra)
    for _ in range(6):  # through an episode end: terminal observations carry the geometry too
        batch, _, dones, infos = venv.step(np.zeros(2, dtype=np.int64))
        for i in np.flatnonzero(dones):
            assert infos[i]["terminal_observation"].shape == (4, 32 + extra)
    venv.close()


def test_wrappers_can_give_the_geometry_in_place_of_the_slot_vectors() -> None:
    from psb_rl.model import GEOMETRY_FEATURES

    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(**TINY, decoder="blob")).eval()
    extra = len(GEOMETRY_FEATURES)
    only = PSBObservationWrapper(ToyImageEnv(size=32), checkpoint=model, geometry="only")
    both = PSBObservationWrapper(ToyImageEnv(size=32), checkpoint=model, geometry=True)
    assert only.observation_space.shape == (4, extra)
    obs, appended = only.reset(seed=0)[0], both.reset(seed=0)[0]
    for _ in range(3):  # the same streamed slots: the geometry part of the appended observation
        np.testing.assert_allclose(obs, appended[:, 32:], atol=1e-6)
        obs, appended = only.step(0)[0], both.step(0)[0]
    venv = VecPSBWrapper(DummyVecEnv([lambda: ToyImageEnv(size=32)] * 2), checkpoint=model, geometry="only")
    assert venv.reset().shape == (2, 4, extra)
    venv.close()
    with pytest.raises(ValueError, match="False, True or 'only'"):
        PSBObservationWrapper(ToyImageEnv(size=32), checkpoint=model, geometry="vectors")


# ------------------------------------------------------------------------------- rendering options
def _minigrid_model() -> PSBAutoencoder:
    from psb_rl.frames import FramePipeline

    pytest.importorskip("minigrid")
    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(**TINY)).eval()
    model.frame_pipeline = FramePipeline(source="render", size=(32, 32), input_size=(40, 40),
                                         env_kwargs={"highlight": False})  # DoorKey-5x5 at 8 px per tile
    return model


def test_wrapper_warns_once_when_the_env_renders_otherwise_than_pretraining() -> None:
    import warnings

    from psb_rl.wrappers import RenderingOptionWarning

    model = _minigrid_model()
    env = gym.make("MiniGrid-DoorKey-5x5-v0", render_mode="rgb_array", tile_size=8)  # MiniGrid's highlight=True
    with pytest.warns(RenderingOptionWarning, match=r"highlight=True.*highlight=False") as caught:
        wrapped = PSBObservationWrapper(env, checkpoint=model)
    assert len([w for w in caught if issubclass(w.category, RenderingOptionWarning)]) == 1
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenderingOptionWarning)
        wrapped.reset(seed=0)
        wrapped.step(0)  # once: at construction, never per step
        same = gym.make("MiniGrid-DoorKey-5x5-v0", render_mode="rgb_array", tile_size=8, highlight=False)
        PSBObservationWrapper(same, checkpoint=model)  # made as pretraining's env: no warning


def test_wrapper_can_apply_the_recorded_options_to_an_env_made_without_them() -> None:
    import warnings

    from psb_rl.wrappers import RenderingOptionWarning

    model = _minigrid_model()
    env = gym.make("MiniGrid-DoorKey-5x5-v0", tile_size=8)  # no render mode, MiniGrid's highlight (e.g. RL Zoo's eval env)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RenderingOptionWarning)
        wrapped = PSBObservationWrapper(env, checkpoint=model, env_options="apply")
    assert env.unwrapped.highlight is False and env.unwrapped.render_mode == "rgb_array"
    obs, _ = wrapped.reset(seed=0)
    assert obs.shape == (4, 32)
    expected = gym.make("MiniGrid-DoorKey-5x5-v0", tile_size=8, highlight=False, render_mode="rgb_array")
    expected.reset(seed=0)
    np.testing.assert_array_equal(env.render(), expected.render())
    with pytest.raises(ValueError, match="env_options"):
        PSBObservationWrapper(env, checkpoint=model, env_options="ignore")


def test_vec_wrapper_warns_when_its_envs_render_otherwise() -> None:
    from gymnasium.wrappers import AddRenderObservation

    from psb_rl.wrappers import RenderingOptionWarning

    model = _minigrid_model()

    def make() -> gym.Env:
        return AddRenderObservation(gym.make("MiniGrid-DoorKey-5x5-v0", render_mode="rgb_array", tile_size=8),
                                    render_only=True)

    venv = DummyVecEnv([make])
    with pytest.warns(RenderingOptionWarning, match="VecPSBWrapper.*highlight=True"):
        VecPSBWrapper(venv, checkpoint=model)


# ------------------------------------------------------------------- frames refused or read on every path
@pytest.fixture()
def recorded_model() -> PSBAutoencoder:
    """A model whose checkpoint recorded a frame pipeline (as every model trained on collected rollouts does)."""
    from psb_rl.frames import FramePipeline

    torch.manual_seed(0)
    model = PSBAutoencoder(PSBConfig(**TINY)).eval()
    model.frame_pipeline = FramePipeline(size=(32, 32), input_size=(24, 24))
    return model


class _FloatHWCEnv(gym.Env):
    """Float ``(24, 24, 3)`` frames declared in [0, 1] whose values are ``scale`` times random values in [0, 1]
    (scale 255: frames that were never divided by 255); ``nan_at`` steps carry a NaN."""

    def __init__(self, scale: float = 1.0, nan_at: tuple[int, ...] = ()) -> None:
        self.observation_space = gym.spaces.Box(0.0, 1.0, (24, 24, 3), np.float32)
        self.action_space = gym.spaces.Discrete(2)
        self.scale, self.nan_at, self.t = scale, nan_at, 0
        self.rng = np.random.default_rng(0)

    def _frame(self) -> np.ndarray:
        frame = (self.rng.random((24, 24, 3)) * self.scale).astype(np.float32)
        if self.t in self.nan_at:
            frame[3, 4, 1] = np.nan
        return frame

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        self.t = 0
        return self._frame(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        self.t += 1
        return self._frame(), 0.0, False, False, {}


@pytest.mark.parametrize("vectorised", [False, True])
def test_float_frames_in_0_255_are_refused_through_a_recorded_pipeline(recorded_model: PSBAutoencoder,
                                                                        vectorised: bool) -> None:
    match = r"frames must be uint8 0\.\.255 or float in \[0, 1\]; got float values in \[.*Divide 0\.\.255"
    if vectorised:
        env = VecPSBWrapper(DummyVecEnv([lambda: _FloatHWCEnv(255.0)]), checkpoint=recorded_model)
        with pytest.raises(ValueError, match=match):
            env.reset()
    else:
        with pytest.raises(ValueError, match=match):
            PSBObservationWrapper(_FloatHWCEnv(255.0), checkpoint=recorded_model).reset(seed=0)
    # the same frames divided by 255 are read (not clipped to white)
    scaled = PSBObservationWrapper(_FloatHWCEnv(1.0), checkpoint=recorded_model)
    white = PSBObservationWrapper(_FloatHWCEnv(1.0), checkpoint=recorded_model)
    assert not np.allclose(scaled.reset(seed=0)[0], white.encode(np.ones((24, 24, 3), np.float32)), atol=1e-3)


def test_model_encode_refuses_float_frames_in_0_255(recorded_model: PSBAutoencoder) -> None:
    video = torch.rand(1, 2, 3, 24, 24)
    recorded_model.encode(video)  # in [0, 1]: read
    for frames in (video * 255, torch.rand(1, 2, 3, 32, 32) * 255):  # through the pipeline; at the model's size
        with pytest.raises(ValueError, match=r"float in \[0, 1\]; got float values in \[0(\.\d+)?, 2"):
            recorded_model.encode(frames)
    with pytest.raises(ValueError, match="NaN or infinite"):
        recorded_model.encode(torch.full((1, 2, 3, 32, 32), float("nan")))


@pytest.mark.parametrize("vectorised", [False, True])
def test_nonfinite_reset_acts_through_a_recorded_pipeline(recorded_model: PSBAutoencoder, vectorised: bool) -> None:
    def make() -> gym.Env:
        return _FloatHWCEnv(1.0, nan_at=(2,))

    if vectorised:
        strict = VecPSBWrapper(DummyVecEnv([make, make]), checkpoint=recorded_model)
        lenient = VecPSBWrapper(DummyVecEnv([make, make]), checkpoint=recorded_model, nonfinite="reset")
        act = np.zeros(2, dtype=np.int64)
        steps = [lambda w: w.reset(), lambda w: w.step(act)[0], lambda w: w.step(act)[0]]
    else:
        strict = PSBObservationWrapper(make(), checkpoint=recorded_model)
        lenient = PSBObservationWrapper(make(), checkpoint=recorded_model, nonfinite="reset")
        steps = [lambda w: w.reset(seed=0)[0], lambda w: w.step(0)[0], lambda w: w.step(0)[0]]
    steps[0](strict), steps[1](strict)
    with pytest.raises(ValueError, match=r"frame of env 0(, 1)? has non-finite values"):
        steps[2](strict)
    steps[0](lenient), steps[1](lenient)
    with pytest.warns(RuntimeWarning, match="env 0"):
        slots = steps[2](lenient)
    assert np.isfinite(slots).all()
    assert lenient.encoder.state.step_count.tolist() == [1] * lenient.encoder.num_envs  # started afresh


class _RGBAEnv(gym.Env):
    """uint8 RGBA ``(24, 24, 4)`` frames: random colours under an opaque alpha."""

    def __init__(self) -> None:
        self.observation_space = gym.spaces.Box(0, 255, (24, 24, 4), np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.rng = np.random.default_rng(0)
        self.last = None

    def _frame(self) -> np.ndarray:
        frame = self.rng.integers(0, 256, (24, 24, 4), dtype=np.uint8)
        frame[..., 3] = 255
        self.last = frame
        return frame

    def reset(self, *, seed: int | None = None, options: dict | None = None) -> tuple[np.ndarray, dict]:
        super().reset(seed=seed)
        return self._frame(), {}

    def step(self, action: int) -> tuple[np.ndarray, float, bool, bool, dict]:
        return self._frame(), 0.0, False, False, {}


@pytest.mark.parametrize("vectorised", [False, True])
def test_rgba_frames_are_read_as_rgb(model: PSBAutoencoder, vectorised: bool) -> None:
    if vectorised:
        venv = DummyVecEnv([_RGBAEnv])
        slots = VecPSBWrapper(venv, checkpoint=model).reset()[0]
        rgb = venv.envs[0].unwrapped.last[..., :3]
    else:
        env = PSBObservationWrapper(_RGBAEnv(), checkpoint=model)
        slots = env.reset(seed=0)[0]
        rgb = env.unwrapped.last[..., :3]
    expected = StreamingEncoder(model, num_envs=1).step(rgb[None])[0].numpy()
    np.testing.assert_allclose(slots, expected, atol=1e-5)
    white = StreamingEncoder(model, num_envs=1).step(np.full((1, 24, 24, 3), 255, np.uint8))[0].numpy()
    assert not np.allclose(slots, white, atol=1e-3)


class _LyingEnv(ToyImageEnv):
    """Declares 24x24 frames, returns 16x16 ones."""

    def reset(self, *, seed=None, options=None):
        obs, info = super().reset(seed=seed, options=options)
        return obs[:16, :16], info

    def step(self, action):
        obs, *rest = super().step(action)
        return (obs[:16, :16], *rest)


def test_frames_of_another_shape_than_declared_are_named(model: PSBAutoencoder) -> None:
    with pytest.raises(ValueError, match=r"VecPSBWrapper: .*observation space"):
        VecPSBWrapper(DummyVecEnv([_LyingEnv]), checkpoint=model).reset()
    with pytest.raises(ValueError, match=r"PSBObservationWrapper: .*\(16, 16, 3\).*declares \(24, 24, 3\)"):
        PSBObservationWrapper(_LyingEnv(), checkpoint=model).reset(seed=0)


def test_identity_pipeline_reads_float_channels_last_frames(model: PSBAutoencoder) -> None:
    from psb_rl.frames import FramePipeline

    env = PSBObservationWrapper(_FloatHWCEnv(1.0), checkpoint=model, frame_pipeline=FramePipeline())
    slots = env.reset(seed=0)[0]
    frame = np.random.default_rng(0).random((24, 24, 3)).astype(np.float32)
    expected = StreamingEncoder(model, num_envs=1).step(frame.transpose(2, 0, 1)[None])[0].numpy()
    np.testing.assert_allclose(slots, expected, atol=1e-5)


def test_a_recorded_checkpoint_digest_refuses_a_swapped_file(tmp_path, model: PSBAutoencoder) -> None:
    from psb_rl import save_checkpoint
    from psb_rl.checkpoint import CheckpointError, file_sha256

    path = save_checkpoint(model, tmp_path / "psb.ckpt")
    digest = file_sha256(path)
    env = PSBObservationWrapper(ToyImageEnv(), checkpoint=str(path), checkpoint_sha256=digest)
    assert env.reset(seed=0)[0].shape == (4, 32)
    torch.manual_seed(5)
    save_checkpoint(PSBAutoencoder(PSBConfig(**TINY)), path)  # another model at the same path
    with pytest.raises(CheckpointError, match=r"psb\.ckpt .*is not the PSB checkpoint this wrapper's configuration"):
        PSBObservationWrapper(ToyImageEnv(), checkpoint=str(path), checkpoint_sha256=digest)

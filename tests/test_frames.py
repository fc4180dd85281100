"""The frame pipeline: layouts (greyscale, stacks, channels-first), crop, non-square resize, masks, records."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from stable_baselines3.common.vec_env import DummyVecEnv, VecFrameStack, VecTransposeImage

from psb_rl.frames import FramePipeline, FramePipelineError, frame_layout, pipeline_for_model, size_from_flag
from psb_rl.preprocessing import resize_uint8_frames


def random_frames(*shape: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


class CountingEnv(gym.Env):
    """Frames whose every pixel is the step count (times 10), RGB or greyscale."""

    def __init__(self, grey: bool = False, size: tuple[int, int] = (40, 48)) -> None:
        self.grey = grey
        shape = size if grey else (*size, 3)
        self.observation_space = gym.spaces.Box(0, 255, shape, np.uint8)
        self.action_space = gym.spaces.Discrete(2)
        self.t = 0

    def frame(self) -> np.ndarray:
        return np.full(self.observation_space.shape, 10 * self.t, np.uint8)

    def reset(self, *, seed=None, options=None):
        super().reset(seed=seed)
        self.t = 0
        return self.frame(), {}

    def step(self, action):
        self.t += 1
        return self.frame(), 0.0, False, self.t >= 20, {}


def test_crop_removes_top_bottom_left_right() -> None:
    frames = random_frames(2, 30, 40, 3)
    out = FramePipeline(crop=(3, 5, 7, 2)).apply(frames)
    np.testing.assert_array_equal(out, frames[:, 3:25, 7:38])


def test_non_square_resize_uses_the_training_filter() -> None:
    frames = random_frames(3, 210, 160, 3)
    pipeline = FramePipeline(crop=(34, 16, 0, 0), size=(80, 64))
    out = pipeline.apply(frames)
    assert out.shape == (3, 80, 64, 3) and out.dtype == np.uint8
    np.testing.assert_array_equal(out, resize_uint8_frames(frames[:, 34:194], (80, 64)))
    assert pipeline.output_size((210, 160)) == (80, 64)


def test_square_size_given_as_int() -> None:
    assert FramePipeline(size=64).size == (64, 64)
    assert FramePipeline(size=64).apply(random_frames(64, 64, 3)).shape == (64, 64, 3)


@pytest.mark.parametrize("shape", [(40, 48), (40, 48, 1)])
def test_greyscale_becomes_rgb(shape: tuple[int, ...]) -> None:
    frames = random_frames(5, *shape)
    pipeline = FramePipeline()
    layout = frame_layout(shape)
    out = pipeline.apply(frames, layout)
    assert out.shape == (5, 40, 48, 3)
    grey = frames.reshape(5, 40, 48)
    for c in range(3):
        np.testing.assert_array_equal(out[..., c], grey)


def test_vec_frame_stack_gives_the_newest_frame() -> None:
    venv = VecFrameStack(DummyVecEnv([CountingEnv]), n_stack=4)
    pipeline = FramePipeline()
    layout = pipeline.check_space(venv.observation_space)
    assert layout == "hwc-stack"
    venv.reset()
    for t in range(1, 4):
        obs, *_ = venv.step(np.array([0]))
        np.testing.assert_array_equal(pipeline.apply(obs, layout), np.full((1, 40, 48, 3), 10 * t, np.uint8))


def test_greyscale_vec_frame_stack_gives_the_newest_frame() -> None:
    # make_atari_env's layout: greyscale (H, W, 1), stacked on the channels by VecFrameStack
    venv = VecFrameStack(DummyVecEnv([lambda: gym.wrappers.ReshapeObservation(CountingEnv(grey=True), (40, 48, 1))]), 4)
    pipeline = FramePipeline(size=(20, 24))
    layout = pipeline.check_space(venv.observation_space)
    assert layout == "hw-stack"
    venv.reset()
    obs, *_ = venv.step(np.array([0]))
    np.testing.assert_array_equal(pipeline.apply(obs, layout), np.full((1, 20, 24, 3), 10, np.uint8))


@pytest.mark.parametrize("grey", [False, True])
def test_frame_stack_observation_gives_the_newest_frame(grey: bool) -> None:
    env = gym.wrappers.FrameStackObservation(CountingEnv(grey=grey), stack_size=4)
    pipeline = FramePipeline()
    layout = pipeline.check_space(env.observation_space)
    assert layout == ("khw" if grey else "khwc")
    env.reset(seed=0)
    env.step(0)
    obs, *_ = env.step(0)
    np.testing.assert_array_equal(pipeline.apply(obs, layout), np.full((40, 48, 3), 20, np.uint8))


def test_channels_first_observations() -> None:
    venv = VecTransposeImage(DummyVecEnv([CountingEnv]))
    pipeline = FramePipeline()
    layout = pipeline.check_space(venv.observation_space)
    assert layout == "chw"
    venv.reset()
    obs, *_ = venv.step(np.array([0]))
    assert pipeline.apply(obs, layout).shape == (1, 40, 48, 3)


def test_float_frames_in_unit_range_become_uint8() -> None:
    frames = np.full((2, 8, 8, 3), 0.5, np.float32)
    assert np.all(FramePipeline().apply(frames) == 128)


def test_masks_follow_the_frames_without_blending() -> None:
    masks = np.zeros((2, 210, 160), np.int32)
    masks[:, 100:110, 20:30] = 7
    masks[:, 120:130, 100:120] = 3
    pipeline = FramePipeline(crop=(34, 16, 0, 0), size=(40, 32))
    out = pipeline.apply_masks(masks)
    assert out.shape == (2, 40, 32) and out.dtype == np.int32
    assert set(np.unique(out)) == {0, 3, 7}  # nearest neighbour: no label in between
    ys, xs = np.nonzero(out[0] == 7)  # the object sits where the frame pipeline puts its pixels
    frame = np.zeros((210, 160, 3), np.uint8)
    frame[100:110, 20:30] = 255
    bright = pipeline.apply(frame)[..., 0] > 0
    assert bright[ys, xs].all()


def test_recorded_input_size_rejects_other_frames() -> None:
    pipeline = FramePipeline(crop=(34, 16, 0, 0), size=80, input_size=(210, 160))
    with pytest.raises(FramePipelineError, match=r"64x64 but this frame pipeline .* recorded on 210x160"):
        pipeline.apply(random_frames(64, 64, 3))
    with pytest.raises(FramePipelineError, match="recorded on 210x160"):
        pipeline.check_space(gym.spaces.Box(0, 255, (64, 64, 3), np.uint8))


def test_clear_errors() -> None:
    with pytest.raises(FramePipelineError, match="leaves no pixels"):
        FramePipeline(crop=(20, 20, 0, 0)).apply(random_frames(30, 30, 3))
    with pytest.raises(FramePipelineError, match="not images"):
        FramePipeline().check_space(gym.spaces.Box(-1, 1, (4,), np.float32))
    with pytest.raises(FramePipelineError, match="not images"):
        FramePipeline().check_space(gym.spaces.Discrete(3))
    with pytest.raises(FramePipelineError, match="source"):
        FramePipeline(source="pixels")
    with pytest.raises(FramePipelineError, match="unknown frame pipeline fields"):
        FramePipeline.from_dict({"sauce": "render"})


def test_dict_round_trip_through_json() -> None:
    import json

    pipeline = FramePipeline(source="render", crop=(1, 2, 3, 4), size=(84, 96), input_size=(100, 120))
    restored = FramePipeline.from_dict(json.loads(json.dumps(pipeline.to_dict())))
    assert restored == pipeline


def test_pipeline_of_a_checkpoint_without_one_resizes_to_the_model() -> None:
    assert pipeline_for_model({"config": {"image_size": 32}, "extra": {}}) == FramePipeline(size=(32, 32))
    recorded = FramePipeline(crop=(2, 0, 0, 0), size=(16, 16), input_size=(40, 40)).to_dict()
    pipeline = pipeline_for_model({"config": {"image_size": [24, 20]}, "extra": {"frame_pipeline": recorded}})
    assert pipeline == FramePipeline.from_dict(recorded)  # the model's preprocessing resizes further, as in training


def test_size_flags() -> None:
    assert size_from_flag(None) is None and size_from_flag([]) is None
    assert size_from_flag([64]) == 64 and size_from_flag([80, 64]) == (80, 64)
    with pytest.raises(FramePipelineError, match="--resize takes one size"):
        size_from_flag([1, 2, 3])


def test_pipeline_travels_from_collection_through_the_checkpoint_to_the_wrappers(tmp_path) -> None:
    """Collection records the pipeline, training copies it, both wrappers apply it: the agent's frames are
    the stored training frames bit for bit."""
    from conftest import tiny_config

    from psb_rl.checkpoint import load_checkpoint, read_checkpoint
    from psb_rl.rollouts import collect_rollouts, load_shard_episodes
    from psb_rl.training import TrainArgs, train
    from psb_rl.wrappers import PSBObservationWrapper, VecPSBWrapper

    manifest = collect_rollouts("PSB/RandomObjects-v0", tmp_path / "data", episodes=4, max_episode_steps=6,
                                crop=(8, 0, 4, 4), resize=(28, 30), progress=False)
    recorded = FramePipeline(crop=(8, 0, 4, 4), size=(28, 30), input_size=(64, 64))
    assert FramePipeline.from_dict(manifest["frame_pipeline"]) == recorded
    assert manifest["frame_shape"] == [28, 30, 3]
    episode = load_shard_episodes(tmp_path / "data" / manifest["shards"][0]["file"])[0]
    assert episode["frames"].shape[1:] == (28, 30, 3) and episode["masks"].shape[1:] == (28, 30)

    cfg = tiny_config(image_size=(24, 20), num_blocks=1)
    args = TrainArgs(data=str(tmp_path / "data"), out=str(tmp_path / "run"), steps=1, batch_size=2, clip_len=2,
                     eval_clips=2, num_gifs=0, progress=False, warmup_steps=1, eval_every=0, val_fraction=0.25,
                     **{k: getattr(cfg, k) for k in ("image_size", "num_slots", "slot_dim", "num_blocks", "num_heads",
                                                     "window", "encoder_channels", "decoder_channels")})
    summary = train(args)
    _, info = read_checkpoint(summary["checkpoint"])
    assert FramePipeline.from_dict(info["extra"]["frame_pipeline"]) == recorded
    assert info["extra"]["env_id"] == "PSB/RandomObjects-v0"
    model = load_checkpoint(summary["checkpoint"])
    assert model.frame_pipeline == recorded and model.config.image_hw == (24, 20)

    import psb_rl  # noqa: F401  (registers PSB/ ids)

    env = PSBObservationWrapper(gym.make("PSB/RandomObjects-v0"), checkpoint=model)
    venv = VecPSBWrapper(DummyVecEnv([lambda: gym.make("PSB/RandomObjects-v0")]), checkpoint=model)
    assert env.frame_pipeline == recorded and venv.frame_pipeline == recorded
    slots, _ = env.reset(seed=3)
    stored_like = recorded.apply(gym.make("PSB/RandomObjects-v0").reset(seed=3)[0])  # the same first frame
    with torch.no_grad():
        expected = model.encode(stored_like[None, None])[0, 0].numpy()
    np.testing.assert_allclose(slots, expected, atol=1e-5)
    with pytest.raises(FramePipelineError, match="recorded on 64x64"):  # never a silent resize of other frames
        PSBObservationWrapper(gym.make("PSB/RandomObjects-v0", image_size=48), checkpoint=model)


def test_small_channels_first_frames_are_rgb() -> None:
    assert frame_layout((3, 24, 24)) == "chw" and frame_layout((4, 24, 24)) == "khw"


# ------------------------------------------------------------------------------- rendering options (env_kwargs)
def test_pipeline_records_the_rendering_options_of_the_manifest() -> None:
    from psb_rl.frames import pipeline_of_manifest

    manifest = {"env_kwargs": {"highlight": False, "return_masks": True, "render_mode": "rgb_array"},
                "frame_pipeline": {"source": "render", "crop": [0, 0, 0, 0], "size": [40, 40], "input_size": [160, 160]}}
    pipeline = pipeline_of_manifest(manifest)
    assert pipeline.env_kwargs == {"highlight": False}  # masks and the render mode do not change frames
    assert FramePipeline.from_dict(pipeline.to_dict()).env_kwargs == {"highlight": False}
    # collections stored before pipelines were recorded keep their options too
    assert pipeline_of_manifest({"pixels": "render", "env_kwargs": {"highlight": False}}).env_kwargs == {"highlight": False}
    assert pipeline_of_manifest({"env_kwargs": {"return_masks": True}}).env_kwargs is None


def test_rendering_options_leave_the_frame_transform_and_old_records_alone() -> None:
    plain = FramePipeline(source="render", size=(40, 40))
    with_options = FramePipeline(source="render", size=(40, 40), env_kwargs={"highlight": False})
    assert with_options == plain  # the same frames from the same raw frames
    assert "env_kwargs" not in plain.to_dict()  # pipelines without options read as they always did
    assert FramePipeline.from_dict({"source": "render", "size": [40, 40]}).env_kwargs is None
    assert "highlight=False" in with_options.describe()
    with pytest.raises(FramePipelineError, match="env_kwargs"):
        FramePipeline(env_kwargs=["highlight"])  # type: ignore[arg-type]


def test_rgba_frames_drop_alpha_where_frames_are_not_stacked_on_the_channels() -> None:
    frames = random_frames(2, 40, 48, 4)
    assert frame_layout((40, 48, 4)) == "hw-stack"  # SB3's VecFrameStack over (H, W, 1): 4 greyscale frames
    layout = frame_layout((40, 48, 4), channel_stack=False)
    assert layout == "hwc-rgba"
    np.testing.assert_array_equal(FramePipeline().apply(frames, layout), frames[..., :3])
    np.testing.assert_array_equal(FramePipeline().apply(frames), frames[..., :3])  # no layout: RGBA
    space = gym.spaces.Box(0, 255, (40, 48, 4), np.uint8)
    assert FramePipeline().check_space(space, channel_stack=False) == "hwc-rgba"


@pytest.mark.parametrize("values", [255.0, 1.5, -0.5, np.nan, np.inf])
def test_float_frames_outside_unit_range_are_refused_not_clipped(values: float) -> None:
    frames = np.full((2, 8, 8, 3), 0.5, np.float32)
    frames[0, 1, 2, 0] = values
    with pytest.raises(FramePipelineError, match=r"frames must be uint8 0\.\.255 or float in \[0, 1\]"):
        FramePipeline(size=4).apply(frames)
    with pytest.raises(FramePipelineError, match="dtype int32"):
        FramePipeline().apply(frames.astype(np.int32))

"""StreamingEncoder: exact to the parallel forward (both windows), per-env resets, resizing, constant state,
errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import tiny_config

from psb_rl.model import PSBAutoencoder
from psb_rl.preprocessing import preprocess_frames
from psb_rl.streaming import StreamingEncoder


def make_model(**overrides) -> PSBAutoencoder:
    torch.manual_seed(0)
    model = PSBAutoencoder(tiny_config(**overrides)).eval()
    for block in getattr(model.slot_encoder, "blocks", []):
        # The relative-time bias starts at zero; give it values so a wrong offset shows.
        torch.nn.init.normal_(block.time_bias.mlp[-1].weight)
    return model


def parallel_slots(model: PSBAutoencoder, history: list[np.ndarray]) -> torch.Tensor:
    with torch.no_grad():
        video = preprocess_frames(np.stack(history)[None], model.config.image_size)
        return model.encode(video)[0, -1]


@pytest.mark.parametrize(
    "overrides",
    [dict(window=3, time_window=3, num_blocks=2, num_slots=4), dict(window=2, time_window=2, num_blocks=3, num_slots=3),
     dict(window=None, time_window=None), dict(window=3, colour_values=True), dict(encoder="savi", colour_values=True),
     dict(window=2, time_window=7), dict(window=1, time_window=5, num_blocks=3), dict(window=3, time_window=None),
     dict(window=None, time_window=2), dict(window=2, time_window=9, time_bias_max_offset=3)],
)
def test_streaming_equals_parallel_with_random_resets(overrides: dict) -> None:
    model = make_model(**overrides)
    num_envs = 3
    longest = max(model.config.window or 4, model.config.time_window or 4)
    steps = 4 * longest + 4
    encoder = StreamingEncoder(model, num_envs=num_envs)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (steps, num_envs, 32, 32, 3), dtype=np.uint8)
    histories: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
    worst = 0.0
    for t in range(steps):
        if t > 0:
            reset = rng.random(num_envs) < 1.5 / steps  # rare: some episodes outlast both windows
            encoder.reset(reset)
            for i in np.flatnonzero(reset):
                histories[i].clear()
        slots = encoder.step(frames[t])
        assert slots.shape == (num_envs, model.config.num_slots, model.config.slot_dim)
        for i in range(num_envs):
            histories[i].append(frames[t, i])
            worst = max(worst, (slots[i] - parallel_slots(model, histories[i])).abs().max().item())
    assert max(len(h) for h in histories) > 2 * longest  # episodes longer than both windows were checked
    assert worst <= 1e-4


@pytest.mark.parametrize("time_window", [2, 8])
def test_long_episode_beyond_training_length_stays_exact(time_window: int) -> None:
    model = make_model(window=2, time_window=time_window, num_blocks=2)
    encoder = StreamingEncoder(model, num_envs=2)
    frames = np.random.default_rng(1).integers(0, 256, (60, 2, 32, 32, 3), dtype=np.uint8)
    for t in range(60):
        if t == 23:  # env 1 starts a new episode; env 0 runs on
            encoder.reset(np.array([False, True]))
        slots = encoder.step(frames[t])
    assert (slots[0] - parallel_slots(model, list(frames[:, 0]))).abs().max().item() <= 1e-4
    assert (slots[1] - parallel_slots(model, list(frames[23:, 1]))).abs().max().item() <= 1e-4
    assert encoder.state.step_count.tolist() == [60, 37]


def test_reset_of_one_env_leaves_the_others_unchanged() -> None:
    model = make_model()
    frames = np.random.default_rng(2).integers(0, 256, (6, 3, 32, 32, 3), dtype=np.uint8)
    plain, with_reset = StreamingEncoder(model, num_envs=3), StreamingEncoder(model, num_envs=3)
    for t in range(6):
        if t == 3:
            with_reset.reset(np.array([False, True, False]))
        a, b = plain.step(frames[t]), with_reset.step(frames[t])
        assert torch.equal(a[[0, 2]], b[[0, 2]])
    assert not torch.equal(a[1], b[1])
    assert with_reset.state.step_count.tolist() == [6, 3, 6]


def test_masked_step_advances_only_selected_envs() -> None:
    model = make_model()
    frames = np.random.default_rng(3).integers(0, 256, (4, 2, 32, 32, 3), dtype=np.uint8)
    full, partial = StreamingEncoder(model, num_envs=2), StreamingEncoder(model, num_envs=2)
    for t in range(4):
        reference = full.step(frames[t])
        out = partial.step(frames[t], mask=np.array([True, t % 2 == 0]))
        assert torch.allclose(out[0], reference[0], atol=1e-5)
        if t % 2:
            assert torch.count_nonzero(out[1]) == 0
    assert partial.state.step_count.tolist() == [4, 2]
    assert torch.allclose(out[0], parallel_slots(model, list(frames[:, 0])), atol=1e-4)


def test_other_resolutions_are_resized_like_training() -> None:
    model = make_model()
    frames = np.random.default_rng(4).integers(0, 256, (3, 1, 48, 48, 3), dtype=np.uint8)
    encoder = StreamingEncoder(model, num_envs=1)
    for t in range(3):
        slots = encoder.step(frames[t])
    assert (slots[0] - parallel_slots(model, list(frames[:, 0]))).abs().max().item() <= 1e-4
    float_encoder = StreamingEncoder(model, num_envs=1)
    for t in range(3):
        float_slots = float_encoder.step(torch.from_numpy(frames[t]).permute(0, 3, 1, 2).float() / 255)
    assert torch.allclose(float_slots, slots, atol=1e-5)


def test_state_size_is_constant_over_the_episode() -> None:
    model = make_model(window=2, time_window=6)
    encoder = StreamingEncoder(model, num_envs=2)
    before = encoder.state.nbytes_per_env()
    cfg = model.config
    # Per block: keys + values of W steps of L tokens, and of Wt steps of N slots (float32).
    per_block = 2 * (2 * cfg.num_tokens + 6 * cfg.num_slots) * cfg.slot_dim * 4
    assert before == cfg.num_blocks * per_block
    frames = np.zeros((2, 32, 32, 3), dtype=np.uint8)
    for _ in range(10):
        encoder.step(frames)
    assert encoder.state.nbytes_per_env() == before > 0


@pytest.mark.parametrize(("window", "time_window"), [(None, None), (2, None), (None, 3)])
def test_unbounded_window_raises_when_cache_is_full(window: int | None, time_window: int | None) -> None:
    model = make_model(window=window, time_window=time_window, max_cache_len=4)
    encoder = StreamingEncoder(model, num_envs=1)
    frames = np.zeros((1, 32, 32, 3), dtype=np.uint8)
    for _ in range(4):
        encoder.step(frames)
    with pytest.raises(RuntimeError, match="max_cache_len=4 steps for an unbounded"):
        encoder.step(frames)
    encoder.reset()
    encoder.step(frames)


@pytest.mark.parametrize(
    ("frames", "error", "match"),
    [
        (np.zeros((3, 32, 32, 3), dtype=np.uint8), ValueError, "num_envs=2"),
        (np.zeros((2, 32, 32, 4), dtype=np.uint8), ValueError, "channels"),
        (np.zeros((2, 32, 32, 3), dtype=np.int32), TypeError, "dtype"),
        (np.zeros((32, 32, 3), dtype=np.uint8), ValueError, "shape"),
        (torch.zeros(2, 32, 32, 3), ValueError, "channels"),
    ],
)
def test_bad_input_gives_clear_errors(frames, error, match) -> None:
    encoder = StreamingEncoder(make_model(), num_envs=2)
    with pytest.raises(error, match=match):
        encoder.step(frames)
    with pytest.raises(ValueError, match="bool array of shape"):
        encoder.reset(np.array([1, 0]))


def test_non_finite_frames_name_the_env_or_reset_it() -> None:
    model = make_model()
    rng = np.random.default_rng(0)
    frames = rng.random((3, 3, 32, 32), dtype=np.float32)
    bad = frames.copy()
    bad[1, 0, 5, 5] = np.nan
    strict = StreamingEncoder(model, num_envs=3)
    with pytest.raises(ValueError, match=r"frame of env 1 has non-finite values"):
        strict.step(bad)
    assert int(strict.state.step_count.sum()) == 0, "a refused batch must not advance any env"
    bad[2, 1, 0, 0] = np.inf
    with pytest.raises(ValueError, match=r"env 1, 2"):
        strict.step(torch.from_numpy(bad))

    lenient = StreamingEncoder(model, num_envs=3, nonfinite="reset")
    fresh = StreamingEncoder(model, num_envs=3)
    clean = rng.random((3, 3, 32, 32), dtype=np.float32)
    lenient.step(clean)
    fresh.step(clean)
    with pytest.warns(RuntimeWarning, match="env 1, 2"):
        slots = lenient.step(bad)
    assert torch.isfinite(slots).all()
    assert lenient.state.step_count.tolist() == [2, 1, 1]  # envs 1 and 2 started afresh with this frame
    zeroed = np.nan_to_num(bad, nan=0.0, posinf=0.0, neginf=0.0)
    expected = StreamingEncoder(model, num_envs=3).step(zeroed)
    torch.testing.assert_close(slots[1:], expected[1:])
    torch.testing.assert_close(slots[0], fresh.step(zeroed)[0])  # env 0 kept its history
    later = lenient.step(clean)  # the NaN does not linger in the state
    assert torch.isfinite(later).all()


def test_float_frames_outside_unit_range_say_how_to_scale() -> None:
    encoder = StreamingEncoder(make_model(), num_envs=2)
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 32, 32)).astype(np.float32)
    with pytest.raises(ValueError, match=r"in \[0, 1\].*Divide 0\.\.255 frames by 255"):
        encoder.step(frames)
    encoder.step(frames / 255.0)  # scaled: accepted


def test_a_list_of_frames_is_accepted() -> None:
    model = make_model()
    frames = np.random.default_rng(0).integers(0, 256, (2, 32, 32, 3), dtype=np.uint8)
    as_list, as_array = StreamingEncoder(model, num_envs=2), StreamingEncoder(model, num_envs=2)
    torch.testing.assert_close(as_list.step(list(frames)), as_array.step(frames))
    with pytest.raises(ValueError, match="expected uint8 frames"):
        as_list.step([frames[0]])  # one frame for two envs
def test_streaming_is_exact_at_a_non_square_size() -> None:
    model = make_model(image_size=(40, 24), window=2)
    encoder = StreamingEncoder(model, num_envs=2)
    frames = np.random.default_rng(3).integers(0, 256, (6, 2, 40, 24, 3), dtype=np.uint8)
    for t in range(6):
        slots = encoder.step(frames[t])
        for i in range(2):
            assert (slots[i] - parallel_slots(model, list(frames[: t + 1, i]))).abs().max().item() <= 1e-4

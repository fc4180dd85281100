"""SAViSlotEncoder: shapes, causality, streaming exactness with resets, parameter matching, training."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from conftest import fit, moving_squares_video, tiny_config

from psb_rl.config import PSBConfig
from psb_rl.model import PSBAutoencoder
from psb_rl.preprocessing import preprocess_frames
from psb_rl.savi import SAViCache, SAViSlotEncoder
from psb_rl.streaming import StreamingEncoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def make_model(**overrides) -> PSBAutoencoder:
    torch.manual_seed(0)
    return PSBAutoencoder(tiny_config(encoder="savi", **overrides)).eval()


def num_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def test_autoencoder_builds_savi_and_shapes() -> None:
    model = make_model()
    cfg = model.config
    assert isinstance(model.slot_encoder, SAViSlotEncoder)
    video = torch.rand(2, 5, 3, 32, 32)
    out = model(video)
    assert out.slots.shape == (2, 5, cfg.num_slots, cfg.slot_dim)
    assert out.masks.shape == (2, 5, cfg.num_slots, 32, 32)
    assert torch.allclose(out.masks.sum(dim=2), torch.ones(2, 5, 32, 32), atol=1e-5)
    _, attention = model.encode(video, return_attention=True)
    assert len(attention) == 1 and attention[0].shape == (2, 5, cfg.num_slots, 1, cfg.num_tokens)
    assert torch.allclose(attention[0].sum(dim=2), torch.ones(2, 5, 1, cfg.num_tokens), atol=1e-5)
    assert model.slot_encoder(model.encode_frames(video))[1] == []
    cache = model.slot_encoder.init_cache(3, torch.device("cpu"))
    assert isinstance(cache[0], SAViCache) and cache[0].slots.shape == (3, cfg.num_slots, cfg.slot_dim)


@pytest.mark.parametrize("slot_init", ["learned", "random"])
def test_causal_future_frames_do_not_change_past_slots(slot_init: str) -> None:
    model = make_model(slot_init=slot_init)
    video = torch.rand(2, 6, 3, 32, 32)
    changed = video.clone()
    changed[:, 3:] = torch.rand_like(changed[:, 3:])
    with torch.no_grad():
        a, b = model.encode(video), model.encode(changed)
    assert torch.equal(a[:, :3], b[:, :3])
    assert not torch.allclose(a[:, 3:], b[:, 3:])


def test_streaming_equals_parallel_with_random_resets() -> None:
    model = make_model()
    num_envs, steps = 3, 14
    encoder = StreamingEncoder(model, num_envs=num_envs)
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (steps, num_envs, 32, 32, 3), dtype=np.uint8)
    histories: list[list[np.ndarray]] = [[] for _ in range(num_envs)]
    worst, resets = 0.0, 0
    for t in range(steps):
        if t > 0:
            reset = rng.random(num_envs) < 0.15
            encoder.reset(reset)
            resets += int(reset.sum())
            for i in np.flatnonzero(reset):
                histories[i].clear()
        slots = encoder.step(frames[t])
        for i in range(num_envs):
            histories[i].append(frames[t, i])
            with torch.no_grad():
                video = preprocess_frames(np.stack(histories[i])[None], model.config.image_size)
                expected = model.encode(video)[0, -1]
            worst = max(worst, (slots[i] - expected).abs().max().item())
    assert resets > 0 and max(len(h) for h in histories) > 5
    assert worst <= 1e-4
    assert encoder.state.nbytes_per_env() == model.config.num_slots * model.config.slot_dim * 4


def test_masked_step_touches_only_selected_envs() -> None:
    model = make_model()
    frames = np.random.default_rng(1).integers(0, 256, (4, 2, 32, 32, 3), dtype=np.uint8)
    full, masked = StreamingEncoder(model, num_envs=2), StreamingEncoder(model, num_envs=2)
    for t in range(4):
        a = full.step(frames[t])
        b = masked.step(frames[t], mask=np.array([True, t % 2 == 0]))
        assert torch.allclose(a[0], b[0], atol=1e-6)
    assert masked.state.step_count.tolist() == [4, 2]


@pytest.mark.parametrize(
    "cfg",
    [PSBConfig(), PSBConfig(num_slots=5, slot_dim=64, num_blocks=2, num_heads=4, encoder_channels=32)],
    ids=["default", "small"],
)
def test_parameter_count_matches_psb(cfg: PSBConfig) -> None:
    fields = cfg.to_dict()
    psb = PSBAutoencoder(PSBConfig(**{**fields, "encoder": "psb"}))
    savi = PSBAutoencoder(PSBConfig(**{**fields, "encoder": "savi"}))
    ratio = num_params(savi.slot_encoder) / num_params(psb.slot_encoder)
    assert 0.9 <= ratio <= 1.1, ratio
    assert 0.9 <= num_params(savi) / num_params(psb) <= 1.1


def test_a_few_training_steps_reduce_the_loss() -> None:
    torch.manual_seed(0)
    model = PSBAutoencoder(tiny_config(encoder="savi", num_blocks=1)).train()
    video = moving_squares_video(4, 4, seed=1)
    initial, final = fit(model, video, steps=60, lr=3e-3)
    assert np.isfinite(final) and final < 0.85 * initial, (initial, final)

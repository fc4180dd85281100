"""PSBAutoencoder: shapes, invariants, causality, the window's receptive field, inverted attention, learning."""

from __future__ import annotations

import pytest
import torch
from conftest import fit, moving_squares_video, tiny_config

from psb_rl.config import PSBConfig
from psb_rl.model import PSBAutoencoder


def make_model(**overrides) -> PSBAutoencoder:
    torch.manual_seed(0)
    return PSBAutoencoder(tiny_config(**overrides)).eval()


@pytest.mark.parametrize("steps", [1, 2, 7])
def test_shapes_and_mask_invariants(steps: int) -> None:
    model = make_model()
    video = torch.rand(2, steps, 3, 32, 32)
    out = model(video)
    assert out.recon.shape == video.shape
    assert out.masks.shape == (2, steps, 4, 32, 32)
    assert out.slots.shape == (2, steps, 4, 32)
    assert out.per_slot_rgb.shape == (2, steps, 4, 3, 32, 32)
    assert torch.allclose(out.masks.sum(dim=2), torch.ones(2, steps, 32, 32), atol=1e-5)
    assert out.loss.ndim == 0 and torch.isfinite(out.loss)
    assert torch.equal(model.encode(video), out.slots)


def test_default_config_runs_on_its_resolution() -> None:
    cfg = PSBConfig()
    model = PSBAutoencoder(cfg)
    size = cfg.image_size
    out = model(torch.rand(1, 2, 3, size, size))
    assert out.masks.shape == (1, 2, cfg.num_slots, size, size)


def test_bfloat16_autocast_on_cpu() -> None:
    model = make_model()
    video = torch.rand(1, 4, 3, 32, 32)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(video)
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.masks.sum(dim=2), torch.ones(1, 4, 32, 32), atol=1e-3)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_cuda_autocast(dtype: torch.dtype) -> None:
    model = make_model().cuda()
    video = torch.rand(2, 5, 3, 32, 32, device="cuda")
    with torch.autocast("cuda", dtype=dtype):
        out = model(video)
    out.loss.backward()
    assert torch.isfinite(out.loss)
    assert torch.allclose(out.masks.sum(dim=2).float(), torch.ones(2, 5, 32, 32, device="cuda"), atol=1e-2)


@pytest.mark.parametrize("window", [2, 3, None])
@pytest.mark.parametrize("encoder", ["psb", "savi"])
def test_causality_is_exact(window: int | None, encoder: str) -> None:
    model = make_model(window=window, encoder=encoder)
    video = torch.rand(2, 9, 3, 32, 32)
    slots = model.encode(video)
    for cut in (0, 4, 8):
        changed = video.clone()
        changed[:, cut + 1 :] = torch.rand_like(changed[:, cut + 1 :])
        other = model.encode(changed)
        assert (other[:, : cut + 1] - slots[:, : cut + 1]).abs().max().item() == 0.0
    perturbed = video.clone()
    perturbed[:, 0] = torch.rand_like(perturbed[:, 0])
    assert (model.encode(perturbed)[:, 1:] - slots[:, 1:]).abs().max().item() > 1e-6


@pytest.mark.parametrize(("window", "blocks"), [(2, 1), (3, 2), (2, 3)])
def test_window_receptive_field_bound(window: int, blocks: int) -> None:
    """With W and M blocks, slots at t depend on frames t-(M+1)(W-1) .. t and on nothing older.

    Each block's bottom-up attention reaches W-1 frames back and its time-axis attention W-1 steps
    back along slots that already reach the previous blocks' extent: reach(M) = (M + 1)(W - 1).
    """
    model = make_model(window=window, num_blocks=blocks)
    reach = (blocks + 1) * (window - 1)
    steps = reach + 3
    video = torch.rand(1, steps, 3, 32, 32)
    slots = model.encode(video)
    last = steps - 1
    inside, outside = video.clone(), video.clone()
    inside[:, last - reach] = torch.rand(3, 32, 32)
    outside[:, last - reach - 1] = torch.rand(3, 32, 32)
    # Influence through (M + 1) small-gain residual hops is tiny but nonzero; outside the bound it is exactly 0.
    assert (model.encode(inside)[:, last] - slots[:, last]).abs().max().item() > 0.0
    assert (model.encode(outside)[:, last] - slots[:, last]).abs().max().item() == 0.0


def test_inverted_attention_sums_to_one_over_slots() -> None:
    model = make_model()
    video = torch.rand(2, 5, 3, 32, 32)
    _, attention = model.encode(video, return_attention=True)
    assert len(attention) == model.config.num_blocks
    offsets = torch.arange(3)
    in_episode = (torch.arange(5)[:, None] >= offsets[None, :])[None, :, :, None]  # frame t - w exists
    for weights in attention:
        assert weights.shape == (2, 5, 4, 3, model.config.num_tokens)  # (B, T, N, K, L)
        totals = weights.sum(dim=2)  # over the slots of the query's step
        assert torch.allclose(totals, in_episode.expand_as(totals).float(), atol=1e-5)


@pytest.mark.parametrize("encoder", ["psb", "savi"])
def test_patch_colour_enters_the_values_only(encoder: str) -> None:
    """colour_values: tokens end with the patch's mean colour; it moves the values, never the keys."""
    model = make_model(encoder=encoder, colour_values=True)
    video = torch.rand(1, 2, 3, 32, 32)
    tokens = model.encode_frames(video)
    d, stride = model.config.slot_dim, model.config.feature_stride
    assert tokens.shape[-1] == model.config.token_dim == d + 3
    patch_mean = video[0, 0, :, :stride, :stride].mean(dim=(1, 2))
    assert torch.allclose(tokens[0, 0, 0, d:], 4.0 * patch_mean, atol=1e-6)  # PATCH_COLOUR_SCALE
    recoloured = torch.cat([tokens[..., :d], tokens[..., d:].flip(-1)], dim=-1)
    layers = model.slot_encoder.blocks if encoder == "psb" else [model.slot_encoder.corrector]
    for layer in layers:
        project = layer.feature_keys_values if encoder == "psb" else layer.keys_values
        (keys, values), (keys2, values2) = project(tokens), project(recoloured)
        assert torch.equal(keys, keys2)
        assert not torch.allclose(values, values2)
    plain = make_model(encoder=encoder, colour_values=False)
    assert plain.encode_frames(video).shape[-1] == d
    assert plain.encode(video).shape == (1, 2, 4, d)


def test_relative_time_bias_depends_on_offsets_only() -> None:
    """A clip shifted in time gives the same slots once both have a full window: no absolute time."""
    model = make_model(window=2, num_blocks=1)
    video = torch.rand(1, 10, 3, 32, 32)
    full = model.encode(video)
    shifted = model.encode(video[:, 3:])
    reach = 2 * (2 - 1)
    assert torch.allclose(full[:, 3 + reach :], shifted[:, reach:], atol=1e-5)


def test_bad_video_gives_clear_error() -> None:
    model = make_model()
    with pytest.raises(ValueError, match=r"preprocess_frames"):
        model(torch.randint(0, 255, (1, 2, 32, 32, 3), dtype=torch.uint8))
    with pytest.raises(ValueError, match=r"\(B, T, 3, 32, 32\)"):
        model(torch.rand(1, 2, 3, 64, 64))


def test_invalid_config_is_rejected() -> None:
    with pytest.raises(ValueError, match="num_heads"):
        PSBConfig(slot_dim=30, num_heads=4)
    with pytest.raises(ValueError, match="window"):
        PSBConfig(window=0)
    with pytest.raises(ValueError, match="unknown PSBConfig fields"):
        PSBConfig.from_dict({"image_size": 64, "bogus": 1})


def test_learns_moving_squares() -> None:
    torch.manual_seed(0)
    model = PSBAutoencoder(tiny_config(num_blocks=1, window=2))
    video = moving_squares_video(batch=4, steps=4, seed=1)
    initial, final = fit(model, video, steps=250, lr=3e-3)  # final / initial = 0.29 with one torch thread
    assert final < 0.5 * initial, (initial, final)

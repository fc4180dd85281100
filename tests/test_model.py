"""PSBAutoencoder: shapes, invariants, causality, the two windows' receptive field, time bias, inverted attention,
learning."""

from __future__ import annotations

import pytest
import torch
from conftest import fit, moving_squares_video, tiny_config
from torch import nn

from psb_rl.config import PSBConfig
from psb_rl.model import PSBAutoencoder, TimeBias


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


def horizon(window: int, time_window: int, blocks: int) -> int:
    """Steps after which a frame stops affecting the slots: (W - 1) + M·(Wt - 1).

    Slots enter block 1 without any frame in them. Block m's bottom-up attention adds frames up to
    W - 1 steps back to slots that (for m > 1) already reach further, and its time-axis attention then
    mixes slots up to Wt - 1 steps back: reach(1) = (W - 1) + (Wt - 1), reach(m) = reach(m - 1) + (Wt - 1).
    """
    return (window - 1) + blocks * (time_window - 1)


@pytest.mark.parametrize(
    ("window", "time_window", "blocks"), [(2, 2, 1), (3, 3, 2), (2, 3, 3), (2, 6, 2), (4, 1, 2), (1, 5, 2), (3, 9, 1)]
)
def test_receptive_field_equals_the_analytic_horizon(window: int, time_window: int, blocks: int) -> None:
    """Perturb frame 0: the slots change up to exactly step (W - 1) + M·(Wt - 1) and never after."""
    model = make_model(window=window, time_window=time_window, num_blocks=blocks)
    expected = horizon(window, time_window, blocks)
    video = torch.rand(1, expected + 4, 3, 32, 32)
    perturbed = video.clone()
    perturbed[:, 0] = torch.rand(3, 32, 32)
    with torch.no_grad():
        change = (model.encode(perturbed) - model.encode(video)).abs().amax(dim=(0, 2, 3))  # per step
    # Influence through small-gain residual hops is tiny but nonzero; beyond the horizon it is exactly 0.
    assert int(torch.nonzero(change).max()) == expected
    assert (change[: expected + 1] > 0).all()


def test_unbounded_time_window_reaches_the_first_frame_from_any_step() -> None:
    model = make_model(window=2, time_window=None, num_blocks=1)
    video = torch.rand(1, 20, 3, 32, 32)
    perturbed = video.clone()
    perturbed[:, 0] = torch.rand(3, 32, 32)
    with torch.no_grad():
        change = (model.encode(perturbed) - model.encode(video)).abs().amax(dim=(0, 2, 3))
    assert (change > 0).all()  # far past (W - 1) + (Wt - 1) for any finite Wt <= 19


def test_config_without_time_window_loads_with_one_window(tmp_path) -> None:
    """Configs (and checkpoints) written before time_window existed keep computing with Wt = W."""
    import json

    from safetensors.torch import save_file

    from psb_rl.checkpoint import FORMAT_NAME, _weights_digest, load_checkpoint

    for window in (3, None):
        stored = {k: v for k, v in tiny_config(window=window).to_dict().items()
                  if k not in ("time_window", "time_bias_max_offset")}
        config = PSBConfig.from_dict(stored)
        assert config.time_window == window and config.time_bias_max_offset is None
    assert PSBConfig.from_dict({"window": 2, "time_window": 9}).time_window == 9  # new configs keep theirs

    model = make_model(window=2, time_window=2, num_blocks=2)
    tensors = {name: value.contiguous() for name, value in model.state_dict().items()}
    stored = {k: v for k, v in model.config.to_dict().items() if k not in ("time_window", "time_bias_max_offset")}
    path = tmp_path / "old.ckpt"
    save_file(tensors, str(path), metadata={"format": FORMAT_NAME, "format_version": "1", "config": json.dumps(stored),
                                             "weights_sha256": _weights_digest(tensors)})
    loaded = load_checkpoint(path)
    assert loaded.config.time_window == 2
    video = torch.rand(1, 9, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(loaded.encode(video), model.encode(video))


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
    model = make_model(window=2, time_window=3, num_blocks=1)
    for block in model.slot_encoder.blocks:  # the output layer starts at zero; give the bias values
        nn.init.normal_(block.time_bias.mlp[-1].weight)
    video = torch.rand(1, 10, 3, 32, 32)
    full = model.encode(video)
    shifted = model.encode(video[:, 3:])
    reach = horizon(2, 3, 1)
    assert torch.allclose(full[:, 3 + reach :], shifted[:, reach:], atol=1e-5)


def test_time_bias_beyond_max_offset_is_the_bias_at_max_offset() -> None:
    """The clamp: offsets above time_bias_max_offset get exactly its bias; offsets up to it are untouched."""
    torch.manual_seed(0)
    clamped, free = TimeBias(3, max_offset=5), TimeBias(3)
    for bias in (clamped, free):
        nn.init.normal_(bias.mlp[-1].weight)  # the output layer starts at zero; give it values
    free.load_state_dict(clamped.state_dict())
    offsets = torch.arange(200)
    a, b = clamped(offsets), free(offsets)
    assert torch.equal(a[:6], b[:6])
    assert torch.equal(a[6:], a[5].expand(194, 3))
    assert not torch.allclose(b[6:], b[5].expand(194, 3))  # unclamped: the MLP moves on with the offset

    # In a model the clamp changes nothing within a clip of max_offset + 1 frames, only beyond.
    model = make_model(window=2, time_window=None, num_blocks=1)
    nn.init.normal_(model.slot_encoder.blocks[0].time_bias.mlp[-1].weight)
    clamp = PSBAutoencoder(tiny_config(window=2, time_window=None, num_blocks=1, time_bias_max_offset=3)).eval()
    clamp.load_state_dict(model.state_dict())
    video = torch.rand(1, 12, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(clamp.encode(video[:, :4]), model.encode(video[:, :4]))
        assert not torch.allclose(clamp.encode(video)[:, 4:], model.encode(video)[:, 4:])


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
    with pytest.raises(ValueError, match="time_window must be >= 1 or None"):
        PSBConfig(time_window=0)
    with pytest.raises(ValueError, match="time_bias_max_offset"):
        PSBConfig(time_bias_max_offset=-1)
    with pytest.raises(ValueError, match="unknown PSBConfig fields"):
        PSBConfig.from_dict({"image_size": 64, "bogus": 1})


def test_learns_moving_squares() -> None:
    torch.manual_seed(0)
    model = PSBAutoencoder(tiny_config(num_blocks=1, window=2))
    video = moving_squares_video(batch=4, steps=4, seed=1)
    initial, final = fit(model, video, steps=250, lr=3e-3)  # final / initial = 0.29 with one torch thread
    assert final < 0.5 * initial, (initial, final)


@pytest.mark.parametrize("size", [84, 96, (40, 24), (30, 21)])
def test_any_resolution_tokens_and_decoder_adapt(size) -> None:
    model = make_model(image_size=size, colour_values=True)
    height, width = model.config.image_hw
    video = torch.rand(1, 2, 3, height, width)
    out = model(video)
    assert out.recon.shape == video.shape and out.masks.shape == (1, 2, 4, height, width)
    assert model.encode_frames(video).shape[2] == model.config.num_tokens
    assert model.config.num_tokens == -(-height // 4) * -(-width // 4)
    assert torch.allclose(out.masks.sum(dim=2), torch.ones(1, 2, height, width), atol=1e-5)


def test_power_of_two_sizes_keep_the_plain_decoder() -> None:
    from psb_rl.model import decoder_layout

    assert decoder_layout((32, 32), 8) == (2, (8, 8))  # the default model: unchanged weights and shapes
    assert decoder_layout((64, 64), 8) == (3, (8, 8))
    assert decoder_layout((84, 84), 8) == (3, (11, 11))  # 88 px decoded, the centre 84 kept
    assert decoder_layout((160, 128), 8) == (4, (10, 8))
    assert PSBConfig.from_dict(PSBConfig(image_size=(80, 64)).to_dict()).image_size == (80, 64)


def test_encode_takes_frames_of_any_size_as_the_wrappers_prepare_them() -> None:
    import numpy as np

    from psb_rl.frames import FramePipeline
    from psb_rl.preprocessing import preprocess_frames

    model = make_model()
    frames = np.random.default_rng(0).integers(0, 256, (2, 3, 64, 64, 3), dtype=np.uint8)
    expected = model.encode(preprocess_frames(frames, 32))
    assert torch.allclose(model.encode(frames), expected)  # uint8 (B, T, H, W, 3) of another size
    as_float = torch.from_numpy(frames).movedim(-1, 2).float() / 255.0  # float (B, T, 3, 64, 64)
    assert torch.allclose(model.encode(as_float), expected, atol=1e-6)
    model.frame_pipeline = FramePipeline(crop=(0, 32, 0, 0), size=(16, 32))  # a recorded pipeline is applied whole
    recorded = model.frame_pipeline.apply(frames)
    assert torch.allclose(model.encode(frames), model.encode(preprocess_frames(recorded, 32)))

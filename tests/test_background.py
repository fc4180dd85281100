import math

import pytest
import torch

from psb_rl.background import (
    background_alignment,
    foreground_mask,
    foreground_weighted_mse,
    median_background,
)
from psb_rl.config import PSBConfig
from psb_rl.model import PSBAutoencoder


def moving_dot_clips(count: int = 12, size: int = 16) -> list[dict[str, torch.Tensor]]:
    """Clips of a white 2x2 dot at a different place in every frame on a constant brown background."""
    clips = []
    for c in range(count):
        frames = torch.zeros(3, size, size, 3, dtype=torch.uint8)
        frames[..., 0], frames[..., 1], frames[..., 2] = 144, 72, 17
        for t in range(3):
            y = (c * 3 + t * 5) % (size - 2)
            frames[t, y:y + 2, y:y + 2] = 236
        clips.append({"frames": frames})
    return clips


def test_median_background_recovers_the_static_background():
    background = median_background(moving_dot_clips(), image_size=16)
    assert background.shape == (3, 16, 16)
    expected = torch.tensor([144, 72, 17]) / 255
    assert torch.allclose(background, expected[:, None, None].expand(3, 16, 16), atol=1e-6)
    with pytest.raises(ValueError, match="empty"):
        median_background([], image_size=16)


def test_foreground_mask_and_weighted_mse():
    background = torch.zeros(3, 4, 4)
    video = torch.zeros(1, 1, 3, 4, 4)
    video[..., 1, 2] = 1.0  # one foreground pixel
    foreground = foreground_mask(video, background)
    assert foreground.sum() == 1 and foreground[0, 0, 1, 2]
    recon = torch.zeros_like(video)  # draws the background, misses the object
    plain = foreground_weighted_mse(recon, video, foreground, 1.0)
    assert plain.item() == pytest.approx(torch.nn.functional.mse_loss(recon, video).item())
    weighted = foreground_weighted_mse(recon, video, foreground, 20.0)
    assert weighted.item() == pytest.approx(20.0 / (15 + 20.0))  # the missed object dominates


def test_background_alignment_is_low_only_when_slot_zero_owns_the_background():
    foreground = torch.zeros(1, 1, 4, 4, dtype=torch.bool)
    foreground[..., 0, 0] = True
    aligned = torch.zeros(1, 1, 2, 4, 4)
    aligned[:, :, 0] = (~foreground).float()
    aligned[:, :, 1] = foreground.float()
    swapped = aligned.flip(2)
    assert background_alignment(aligned, foreground).item() < 1e-4
    assert background_alignment(swapped, foreground).item() > 5.0


def test_background_slot_draws_the_set_image_and_difference_input_sees_it():
    cfg = PSBConfig(image_size=16, num_slots=3, slot_dim=32, num_blocks=1, encoder_channels=8,
                    decoder_channels=8, decoder_grid=4, background_slot=True, difference_input=True)
    model = PSBAutoencoder(cfg)
    image = torch.rand(3, 16, 16)
    model.set_background(image)
    video = torch.rand(1, 2, 3, 16, 16)
    out = model(video)
    assert torch.equal(out.per_slot_rgb[0, 0, 0], image)  # slot 0 draws the background image
    assert torch.equal(model.frame_encoder.reference, image)
    # the reference is part of the state (carried by checkpoints) and changes the tokens
    assert "frame_encoder.reference" in model.state_dict()
    before = model.encode_frames(video)
    model.set_background(torch.zeros(3, 16, 16))
    assert not torch.allclose(before, model.encode_frames(video))
    with pytest.raises(ValueError, match="background image of shape"):
        model.set_background(torch.zeros(3, 8, 8))


def test_colour_components_split_touching_objects_of_different_colours():
    from psb_rl.background import colour_components

    video = torch.zeros(1, 1, 3, 8, 8)
    video[..., 0, 1:3, 1:4] = 1.0  # a red 2x3 box
    video[..., 1, 3:5, 1:4] = 1.0  # a green 2x3 box touching it
    video[..., :, 6, 6] = 1.0  # a white dot
    foreground = foreground_mask(video, torch.zeros(3, 8, 8))
    regions = colour_components(video, foreground, max_components=4)
    assert regions.shape == (1, 1, 4, 8, 8)
    assert regions.sum(dim=(-2, -1)).tolist() == [[[6, 6, 1, 0]]]
    assert not (regions[0, 0, 0] & regions[0, 0, 1]).any()
    assert colour_components(video, foreground, max_components=1).sum().item() == 6  # the largest only


def test_component_alignment_rewards_one_slot_per_region():
    from psb_rl.background import component_alignment

    regions = torch.zeros(1, 1, 2, 4, 4, dtype=torch.bool)
    regions[..., 0, 0, :2] = True
    regions[..., 1, 3, 2:] = True
    masks = torch.zeros(1, 1, 3, 4, 4)
    masks[:, :, 0] = 1.0  # slot 0 (background) everywhere ...
    masks[:, :, 0][regions[:, :, 0] | regions[:, :, 1]] = 0.0
    masks[:, :, 2][regions[:, :, 0]] = 1.0  # ... slot 2 on the first region, slot 1 on the second
    masks[:, :, 1][regions[:, :, 1]] = 1.0
    assert component_alignment(masks, regions, first_slot=1).item() == pytest.approx(0.0)
    merged = torch.zeros_like(masks)
    merged[:, :, 0] = 1.0 - (regions.any(dim=2)).float()
    merged[:, :, 1] = regions.any(dim=2).float()  # one slot over both regions
    assert component_alignment(merged, regions, first_slot=1).item() > 0.3
    assert component_alignment(masks, torch.zeros_like(regions)).item() == 0.0


def test_colour_alignment_pulls_each_slot_to_the_colour_of_the_pixels_it_owns():
    from psb_rl.background import colour_alignment

    video = torch.zeros(1, 1, 3, 4, 4)
    video[..., 0, :2, :] = 1.0  # red top half, black bottom half
    masks = torch.zeros(1, 1, 3, 4, 4)
    masks[:, :, 0, 2:] = 0.9  # slot 0 (background) owns the bottom half, slot 1 the top half
    masks[:, :, 1, :2] = 0.6
    masks = masks + 0.05  # soft masks: every slot has some weight everywhere
    masks = masks / masks.sum(dim=2, keepdim=True)
    right = torch.zeros(1, 1, 3, 3, 4, 4)
    right[:, :, 1, 0] = 1.0  # slot 1 decodes red where it owns red pixels
    assert colour_alignment(masks, right, video).item() == pytest.approx(0.0)
    grey = torch.full((1, 1, 3, 3, 4, 4), 0.5, requires_grad=True)
    loss = colour_alignment(masks, grey, video)
    assert loss.item() == pytest.approx(((0.5 - 1.0) ** 2 + 0.25 + 0.25) / 3)  # slot 2 owns nothing
    loss.backward()
    assert grey.grad[:, :, 1].abs().sum() > 0 and grey.grad[:, :, 0].abs().sum() == 0  # slot 0 left out
    assert grey.grad[:, :, 2].abs().sum() == 0
    # with slot 0 included, its colour on the black pixels it owns counts too
    right[:, :, 0] = 1.0
    assert colour_alignment(masks, right, video).item() == pytest.approx(0.0)
    assert colour_alignment(masks, right, video, first_slot=0).item() == pytest.approx(0.5)


def test_blob_decoder_draws_one_box_per_slot_over_the_background():
    cfg = PSBConfig(image_size=16, num_slots=3, slot_dim=32, num_blocks=1, encoder_channels=8, decoder_channels=8,
                    decoder_grid=4, decoder="blob", background_slot=True)
    model = PSBAutoencoder(cfg)
    model.set_background(torch.full((3, 16, 16), 0.2))
    decoder = model.decoder
    with torch.no_grad():  # slot 1 -> a strong small box at the top left, slot 2 -> a weak one elsewhere
        decoder.head[-1].weight.zero_()
        decoder.head[-1].bias.zero_()
    slots = torch.zeros(1, 3, 32)
    recon, masks, rgb = decoder(slots)
    assert masks.shape == (1, 3, 16, 16) and torch.allclose(masks.sum(dim=1), torch.ones(1, 16, 16))
    assert torch.equal(rgb[0, 0], torch.full((3, 16, 16), 0.2))  # slot 0 draws the background image
    assert torch.allclose(rgb[0, 1], torch.full((3, 16, 16), 0.5))  # other slots: one colour each
    # a blob owns its centre more than its corners: masks are local, not uniform
    assert masks[0, 1, 8, 8] > masks[0, 1, 0, 0]
    assert recon.shape == (1, 3, 16, 16)
    with pytest.raises(ValueError, match="decoder must be"):
        PSBConfig(decoder="transformer")


def test_training_adds_the_colour_alignment_term_with_its_weight():
    import dataclasses

    from psb_rl.training import TrainArgs, background_terms

    args = TrainArgs(image_size=16, num_slots=3, slot_dim=32, num_blocks=1, encoder_channels=8, decoder_channels=8,
                     decoder_grid=4, decoder="blob")
    model = PSBAutoencoder(args.model_config())
    reference = torch.zeros(3, 16, 16)
    video = torch.rand(2, 2, 3, 16, 16)
    output = model(video)
    plain, logged = background_terms(output, video, reference, args)
    assert "colour_alignment" not in logged
    weighted, logged = background_terms(output, video, reference, dataclasses.replace(args, colour_alignment=2.0))
    assert logged["colour_alignment"] > 0
    assert weighted.item() == pytest.approx(plain.item() + 2.0 * logged["colour_alignment"], rel=1e-5)


def test_motion_mask_marks_where_an_object_is_now_not_where_it_was():
    from psb_rl.background import motion_mask

    background = torch.zeros(3, 6, 6)
    video = torch.zeros(1, 3, 3, 6, 6)
    video[0, 0, :, 1, 1] = video[0, 1, :, 1, 3] = video[0, 2, :, 1, 3] = 1.0  # moves once, then stands still
    video[0, :, :, 5, 5] = 1.0  # a static object: foreground, but never moving
    moving = motion_mask(video, background)
    assert not moving[0, 0].any()  # the first frame of a clip has no previous frame
    assert moving[0, 1].nonzero().tolist() == [[1, 3]]  # the new place; the left one (1, 1) shows background
    assert not moving[0, 2].any()


def test_motion_alignment_pulls_moving_pixels_off_the_background_slot():
    from psb_rl.background import motion_alignment

    moving = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    moving[0, 1, 2, 2] = True
    on_object = torch.zeros(1, 2, 3, 4, 4)
    on_object[:, :, 0] = 1.0
    on_object[0, 1, :, 2, 2] = torch.tensor([0.0, 1.0, 0.0])
    assert motion_alignment(on_object, moving).item() == pytest.approx(0.0, abs=1e-5)
    on_background = on_object.clone()
    on_background[0, 1, :, 2, 2] = torch.tensor([0.9, 0.05, 0.05])  # object slots hold 0.1 of it
    assert motion_alignment(on_background, moving).item() == pytest.approx(-math.log(0.1), rel=1e-4)
    assert motion_alignment(on_background, torch.zeros_like(moving)).item() == 0.0  # nothing moves: no term
    masks = on_background.clone().requires_grad_(True)
    motion_alignment(masks, moving).backward()
    assert masks.grad[0, 1, 1:, 2, 2].lt(0).all()  # descending raises the object slots where it moves

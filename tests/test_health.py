"""Tests for :mod:`psb_rl.health`: every number checked by hand on constructed outputs, and the
collapse flag on a randomly initialised, a collapsed and a healthy model output."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from conftest import moving_squares_video, tiny_config

from psb_rl.health import (
    binding_health,
    collapse_warning,
    format_health,
    health_fields,
    health_per_clip,
    health_postfix,
    is_collapsed,
    summarize_health,
)
from psb_rl.model import PSBAutoencoder

pytestmark = pytest.mark.usefixtures("one_torch_thread")

SIZE, STEPS = 8, 3
#: (row, col) of the 2×2 squares' top-left corners per frame, and their colours.
TRACKS = [[(0, 0), (0, 2), (0, 4)], [(4, 0), (4, 2), (4, 4)], [(6, 6), (4, 6), (2, 6)]]
COLOURS = [(1.0, 0.0, 0.0), (0.0, 1.0, 0.0), (0.0, 0.0, 1.0)]


def squares_clip() -> tuple[torch.Tensor, torch.Tensor]:
    """One clip ``(1, 3, 3, 8, 8)`` of three 2×2 squares moving 2 px a frame on black, and its object labels
    ``(3, 8, 8)`` (0 = background, k + 1 = square k). No pixel is covered in more than one frame of three,
    so the per-pixel median background is black everywhere."""
    video = torch.zeros(1, STEPS, 3, SIZE, SIZE)
    labels = torch.zeros(STEPS, SIZE, SIZE, dtype=torch.long)
    for k, (track, colour) in enumerate(zip(TRACKS, COLOURS, strict=True)):
        for t, (y, x) in enumerate(track):
            video[0, t, :, y : y + 2, x : x + 2] = torch.tensor(colour)[:, None, None]
            labels[t, y : y + 2, x : x + 2] = k + 1
    return video, labels


def collapsed_output(video: torch.Tensor, num_slots: int = 5) -> dict[str, torch.Tensor]:
    """Uniform masks, identical slots, a reconstruction that is the (black) background."""
    b, t = video.shape[:2]
    return {"masks": torch.full((b, t, num_slots, SIZE, SIZE), 1.0 / num_slots),
            "slots": torch.ones(b, t, num_slots, 6), "video": video, "recon": torch.zeros_like(video)}


def healthy_output(video: torch.Tensor, labels: torch.Tensor, num_slots: int = 5) -> dict[str, torch.Tensor]:
    """Slot k + 1 holds square k with weight 0.9 (the others 0.025 each), slot 0 the background, slot 4 nothing;
    orthogonal slots; a perfect reconstruction."""
    masks = torch.full((1, STEPS, num_slots, SIZE, SIZE), 0.025)
    masks.scatter_(2, labels[None, :, None], 0.9)
    slots = torch.eye(num_slots, 6).expand(1, STEPS, -1, -1)
    return {"masks": masks, "slots": slots, "video": video, "recon": video.clone()}


def test_collapsed_case_numbers_by_hand():
    video, _ = squares_clip()
    health = binding_health(**collapsed_output(video))
    assert health["slots_in_use"] == 1  # argmax of uniform masks is slot 0 everywhere
    assert health["mask_confidence"] == pytest.approx(0.2)
    assert health["slot_similarity"] == pytest.approx(1.0)
    # foreground: 3 squares × 4 px × 3 frames = 36 pixels, 108 values, each a pure colour (one channel at 1)
    assert health["foreground_fraction"] == pytest.approx(36 / (STEPS * SIZE * SIZE))
    assert health["foreground_mse"] == pytest.approx(1 / 3)  # per pixel: one channel off by 1, two exact
    assert health["background_baseline_mse"] == pytest.approx(1 / 3)
    assert health["foreground_ratio"] == pytest.approx(1.0)
    assert health["foreground_drawn"] == 0.0  # the uniform mixture of black slots draws the black background
    assert health["collapsed"]
    assert len(health["collapse_reasons"]) == 4  # every rule that can fires
    assert math.isnan(health["object_floor_share"])  # one slot wins everything: no object slot to judge


def test_healthy_case_numbers_by_hand():
    video, labels = squares_clip()
    health = binding_health(**healthy_output(video, labels))
    assert health["slots_in_use"] == 4  # background + 3 squares; slot 4 wins no pixel
    assert health["mask_confidence"] == pytest.approx(0.9)
    assert health["slot_similarity"] == pytest.approx(0.0)
    assert health["foreground_mse"] == 0.0
    assert health["background_baseline_mse"] == pytest.approx(1 / 3)
    assert health["foreground_ratio"] == 0.0 and health["foreground_drawn"] == 1.0
    assert health["object_floor_share"] == 0.0  # the object slots win exactly the squares
    assert health["foreground_in_largest_slot"] == 0.0  # the background slot wins none of them
    assert not health["collapsed"] and health["collapse_reasons"] == []
    assert collapse_warning(health) == ""


def test_each_rule_alone():
    video, labels = squares_clip()
    healthy = healthy_output(video, labels)
    # a reconstruction halfway between the background and the input: error 0.25 of the baseline's
    half = dict(healthy, recon=video / 2)
    assert binding_health(**half)["foreground_ratio"] == pytest.approx(0.25)
    assert not binding_health(**half)["collapsed"]
    assert binding_health(**half)["foreground_drawn"] == pytest.approx(0.5)
    # objects painted at 10 % of their colour: drawn 0.1 -> collapsed by that rule only
    faint = binding_health(**dict(healthy, recon=video * 0.1))
    assert faint["foreground_ratio"] == pytest.approx(0.81) and faint["foreground_drawn"] == pytest.approx(0.1)
    assert faint["collapsed"] and len(faint["collapse_reasons"]) == 1
    assert "draws the static background" in faint["collapse_reasons"][0]
    # objects drawn where they are but in the wrong colour (a grey box on a red square): a worse error than
    # the background's, yet drawn -> not collapsed
    grey = binding_health(**dict(healthy, recon=(video.amax(dim=2, keepdim=True) * 0.8).expand_as(video)))
    assert grey["foreground_ratio"] > 1.0 and grey["foreground_drawn"] > 0.25 and not grey["collapsed"]
    # two slots share all objects: 2 in use
    merged = healthy["masks"].clone()
    merged[:, :, 1] += merged[:, :, 2] + merged[:, :, 3]
    merged[:, :, 2:4] = 0
    few = binding_health(**dict(healthy, masks=merged))
    assert few["slots_in_use"] == 2 and few["collapsed"] and "slots win" in few["collapse_reasons"][0]
    # nearly parallel slots
    similar = binding_health(**dict(healthy, slots=torch.ones(1, STEPS, 5, 6) + 0.01 * healthy["slots"]))
    assert similar["slot_similarity"] > 0.99 and similar["collapsed"]


def floor_slots_output(video: torch.Tensor, track: bool = False) -> dict[str, torch.Tensor]:
    """Healthy by every other number, yet binds nothing: slot 0 wins the squares and most of the floor, slots
    1 and 2 tile floor the squares never touch (rows 2-3 and 6-7, columns 0-3); with ``track`` slot 3 also
    wins rows 0-1, the red square's track (4 red pixels of 16 per frame)."""
    masks = torch.full((1, STEPS, 5, SIZE, SIZE), 0.025)
    masks[:, :, 0] = 0.9
    for slot, rows in ((1, slice(2, 4)), (2, slice(6, 8))):
        masks[:, :, :, rows, 0:4] = 0.025
        masks[:, :, slot, rows, 0:4] = 0.9
    if track:
        masks[:, :, :, 0:2, :] = 0.025
        masks[:, :, 3, 0:2, :] = 0.9
    return {"masks": masks, "slots": torch.eye(5, 6).expand(1, STEPS, -1, -1), "video": video,
            "recon": video.clone()}


def test_object_slots_on_the_floor_are_flagged_without_ground_truth():
    video, _ = squares_clip()
    floor = binding_health(**floor_slots_output(video))
    assert floor["slots_in_use"] == 3 and floor["foreground_drawn"] == 1.0
    assert floor["mask_confidence"] == pytest.approx(0.9)
    assert floor["object_floor_share"] == 1.0  # every pixel the object slots win is black floor
    assert floor["foreground_in_largest_slot"] == 1.0  # and slot 0 wins every square
    assert floor["collapsed"] and len(floor["collapse_reasons"]) == 1
    assert "object slots sit on the floor (100%" in floor["collapse_reasons"][0]
    assert "--fixed-background" in collapse_warning(floor)
    # pooled over the object slots: per frame 4 red pixels of the 16 + 8 + 8 they win
    track = binding_health(**floor_slots_output(video, track=True))
    assert track["slots_in_use"] == 4 and track["object_floor_share"] == pytest.approx(1 - 4 / 32)


def test_object_slots_on_a_floor_that_is_not_the_most_common_colour_are_flagged():
    """A maze: grey walls cover most of the frame and slot 0 wins them and a red square moving along the top;
    slots 1 and 2 tile the black room below, which is a floor colour too (more than a fifth of the clip)."""
    video = torch.full((1, STEPS, 3, SIZE, SIZE), 0.5)
    video[:, :, :, 5:8, 0:6] = 0.0  # the room: 18 black pixels of 64, 46 grey
    for t in range(STEPS):
        video[0, t, :, 0, 2 * t] = torch.tensor([1.0, 0.0, 0.0])
    masks = torch.full((1, STEPS, 5, SIZE, SIZE), 0.025)
    masks[:, :, 0] = 0.9
    masks[:, :, :, 5:8, 0:6] = 0.025
    masks[:, :, 1, 5:7, 0:6] = 0.9
    masks[:, :, 2, 7, 0:6] = 0.9
    output = {"masks": masks, "slots": torch.eye(5, 6).expand(1, STEPS, -1, -1), "video": video,
              "recon": video.clone()}
    maze = binding_health(**output)
    assert maze["object_floor_share"] == 1.0 and maze["collapsed"]
    # the same slots on a yellow and a blue object (6 pixels each) with a black margin: objects are no floor
    video[:, :, :, 5, 0:6] = torch.tensor([1.0, 1.0, 0.0])[:, None]
    video[:, :, :, 6, 0:6] = torch.tensor([0.0, 0.0, 1.0])[:, None]
    bound = binding_health(**output)
    assert bound["object_floor_share"] == 0.0 and not bound["collapsed"]


def test_slot_similarity_is_mean_of_pairs():
    slots = torch.tensor([[1.0, 0.0], [0.0, 1.0], [1.0, 1.0]])[None, None]  # cosines 0, 1/√2, 1/√2
    video = torch.zeros(1, 1, 3, 4, 4)
    per_clip = health_per_clip(torch.full((1, 1, 3, 4, 4), 1 / 3), slots, video, video)
    assert per_clip["slot_similarity"][0] == pytest.approx(math.sqrt(2) / 3)
    # no foreground in a static clip: foreground numbers are NaN, not zero, and do not decide collapse
    report = summarize_health(per_clip, num_slots=3)
    assert math.isnan(report["foreground_mse"]) and math.isnan(report["foreground_ratio"])


def test_pooling_over_batches_equals_one_batch():
    video, labels = squares_clip()
    out = healthy_output(video, labels)
    out["recon"] = video * 0.5
    both = {k: torch.cat([v, v * (0.5 if k == "recon" else 1)]) for k, v in out.items()}
    first = health_per_clip(**{k: v[:1] for k, v in both.items()})
    second = health_per_clip(**{k: v[1:] for k, v in both.items()})
    pooled = summarize_health({k: np.concatenate([first[k], second[k]]) for k in first}, 5)
    assert pooled == pytest.approx(binding_health(**both))


def test_bad_shapes_raise_clear_error():
    video, _ = squares_clip()
    with pytest.raises(ValueError, match="expected masks"):
        binding_health(torch.zeros(1, 3, 8, 8), torch.zeros(1, 3, 4, 6), video, video)


@torch.no_grad()
def test_random_and_collapsed_models_are_flagged_healthy_output_is_not():
    torch.manual_seed(0)
    video = moving_squares_video(2, 4)
    model = PSBAutoencoder(tiny_config()).eval()
    out = model(video)
    random_health = binding_health(out.masks, out.slots, video, out.recon)
    assert random_health["collapsed"], random_health
    # identical initial slots stay identical through symmetric attention: the textbook collapse
    model.slot_encoder.initializer.mean.data[:] = model.slot_encoder.initializer.mean.data[:, :1]
    out = model(video)
    collapsed = binding_health(out.masks, out.slots, video, out.recon)
    assert collapsed["slot_similarity"] == pytest.approx(1.0, abs=1e-5)
    assert collapsed["slots_in_use"] == 1 and collapsed["collapsed"]
    assert "binding collapsed" in collapse_warning(collapsed)
    healthy_video, labels = squares_clip()
    assert not is_collapsed(binding_health(**healthy_output(healthy_video, labels)))


def test_report_lines():
    video, labels = squares_clip()
    healthy = binding_health(**healthy_output(video, labels))
    assert health_postfix(healthy) == {"slots": "4.0", "conf": "0.90", "cos": "0.00", "fg": "0.00"}
    assert format_health(healthy).endswith("healthy")
    fields = dict(item.split("=") for item in health_fields(healthy).split(", "))  # numbers only: logs parse them
    assert {k: float(v) for k, v in fields.items()} == {"slots_in_use": 4.0, "mask_confidence": 0.9,
                                                        "slot_similarity": 0.0, "foreground_ratio": 0.0, "collapsed": 0.0}
    collapsed = binding_health(**collapsed_output(video))
    assert health_postfix(collapsed)["collapsed"] == "yes" and format_health(collapsed).endswith("COLLAPSED")

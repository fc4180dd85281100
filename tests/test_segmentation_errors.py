"""Tests of tools/segmentation_errors.py (where a checkpoint's segmentation and tracking go wrong)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

import tools.segmentation_errors as segmentation_errors
from psb_rl.checkpoint import save_checkpoint
from psb_rl.config import PSBConfig
from psb_rl.model import PSBAutoencoder
from psb_rl.rollouts import collect_rollouts

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_tracking_summary_counts_switches_flicker_and_rates(monkeypatch) -> None:
    """Two 2×2 objects over five frames; object 1 moves to slot 3 at t = 2 and back at t = 3 (flicker, into
    a free slot); objects 1 and 2 swap slots at t = 4 (a lasting swap, each into the other's slot)."""
    true = np.zeros((1, 5, 6, 6), dtype=np.int64)
    true[..., 0:2, 0:2], true[..., 4:6, 4:6] = 1, 2
    pred = np.zeros_like(true)
    for t, (a, b) in enumerate([(1, 2), (1, 2), (3, 2), (1, 2), (2, 1)]):
        pred[0, t, 0:2, 0:2], pred[0, t, 4:6, 4:6] = a, b
    monkeypatch.setattr(segmentation_errors, "segment", lambda model, frames, masks: (true, pred))
    summary = segmentation_errors.analyse_tracking(None, None, None, bins=(0, 4, 8), undo_window=3)
    assert (summary["object_steps"], summary["switches"]) == (8, 4)
    assert summary["switch_rate"] == 0.5
    assert summary["into_fractions"] == {"object": 0.5, "background": 0.0, "free": 0.5}
    assert summary["undone_fraction"] == 0.25  # only the move into slot 3 is taken back
    assert [row["fraction"] for row in summary["nearest_object_fractions"]] == [0.0, 1.0, 0.0]  # all 4 px apart
    # Thirds of t = 1..4: [1, 2], [3], [4] with 4, 2, 2 object-steps and 1, 1, 2 switches.
    assert summary["switch_rate_by_third"] == [0.25, 0.5, 1.0]


def test_object_attention_share_weights_tokens_by_their_object_pixels() -> None:
    """One frame of three tokens, half, none and all object pixels; slot 0 holds an object, slot 1 does not."""
    attention = np.array([[[[0.5, 0.5, 0.0], [0.5, 0.5, 1.0]]]])  # (C=1, T=1, N=2, L=3)
    token_objects = np.array([[[0.5, 0.0, 1.0]]])
    holders = np.array([[[True, False]]])
    share = segmentation_errors.object_attention_share(attention, token_objects, holders)
    assert share.tolist() == [0.25]  # (0.5·0.5 + 0.5·0 + 0·1) / (0.5 + 0.5 + 0)
    holders[..., 1] = True  # slot 1: (0.5·0.5 + 0 + 1·1) / 2
    assert segmentation_errors.object_attention_share(attention, token_objects, holders).tolist() == [0.25, 0.625]


def test_slot_predictability_votes_with_neighbours_from_other_clips_only() -> None:
    features = np.array([[0.0], [0.0], [10.0], [10.0]])
    clips = np.array([0, 1, 0, 1])
    # The same place holds the same slot in both clips: the slot is a function of position.
    assert segmentation_errors.slot_predictability(features, clips, np.array([0, 0, 1, 1]), k=1) == 1.0
    # Each clip uses the other slot at a place: its own clip would agree, the other clip never does.
    assert segmentation_errors.slot_predictability(features, clips, np.array([0, 1, 1, 0]), k=1) == 0.0
    # k = 2 (both instances of the other clip vote; a tie goes to the lower slot id): only the last
    # instance, slot 1 where the other clip has slot 0 twice, is missed.
    slots = np.array([0, 0, 0, 1])
    assert segmentation_errors.slot_predictability(features, clips, slots, k=2) == 0.75


def test_merge_ceiling_merges_close_pairs_only() -> None:
    """Objects 1, 2 and 3 (two pixels each) in columns 0, 2 and 7: 1 and 2 are 2 px apart, 3 is 5 px away."""
    true = np.zeros((1, 1, 8, 8), dtype=np.int64)
    true[0, 0, 0:2, 0], true[0, 0, 0:2, 2], true[0, 0, 0:2, 7] = 1, 2, 3
    assert segmentation_errors.merge_ceiling(true, 2) == (1.0, 1.0)  # 2 is not below 2: nothing merged
    # 1 and 2 merged: contingency 2, 2, 2; true pairs 3, predicted pairs C(4,2) + C(2,2) = 7, of C(6,2) = 15;
    # ARI = (3 - 3·7/15) / ((3 + 7)/2 - 3·7/15) = 1.6 / 3.6.
    assert segmentation_errors.merge_ceiling(true, 3) == pytest.approx((4 / 9, 4 / 9))
    assert segmentation_errors.merge_ceiling(true, 6) == pytest.approx((0.0, 0.0))  # one segment for all


def test_main_writes_segmentation_and_tracking_json(tmp_path: Path) -> None:
    data = tmp_path / "rollouts"
    collect_rollouts("PSB/RandomObjects-v0", data, episodes=6, resize=32, max_episode_steps=12, seed=0, progress=False)
    model = PSBAutoencoder(PSBConfig(num_slots=4, slot_dim=32, num_blocks=1, num_heads=2, window=2,
                                     encoder_channels=16, decoder_channels=16))
    checkpoint = save_checkpoint(model, tmp_path / "psb.ckpt")
    summary = segmentation_errors.main(["--checkpoint", str(checkpoint), "--data", str(data), "--clips", "4",
                                        "--val-fraction", "0.34", "--track-len", "10", "--device", "cpu"])
    written = json.loads((tmp_path / "segmentation_errors.json").read_text())
    tracking = written["tracking"]
    attention = written["attention_on_objects"]
    assert len(attention["blocks"]) == 1 and 0 < attention["object_pixel_fraction"] < attention["footprint_share"] <= 1
    assert all(0 <= row["mean"] <= 1 for row in attention["blocks"])
    assert written["objects"] == summary["objects"] > 0 and tracking["clip_len"] == 10
    assert 0 <= written["slot_from_centre"] <= 1 and 0 <= written["slot_from_colour"] <= 1
    assert 0 < written["most_common_slot"] <= 1
    assert [row["below"] for row in written["merge_ceiling"]] == [4, 8, 12, 16]
    assert 0 < tracking["object_steps"] and 0 <= tracking["switches"] <= tracking["object_steps"]
    assert tracking["switch_rate"] == pytest.approx(tracking["switches"] / tracking["object_steps"])
    if tracking["switches"]:
        assert sum(tracking["into_fractions"].values()) == pytest.approx(1.0)

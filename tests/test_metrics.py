"""Tests for :mod:`psb_rl.metrics` against hand-computed values and brute-force pair counting."""

from __future__ import annotations

import itertools
import math
import time

import numpy as np
import pytest
import torch

from psb_rl.metrics import (
    background_slots,
    fg_ari,
    mbo,
    miou,
    mse,
    object_errors,
    object_recall,
    object_recall_counts,
    psnr,
    segmentation_metrics,
    slot_switches,
)


def brute_force_fg_ari(true: np.ndarray, pred: np.ndarray) -> float:
    """ARI by counting every pixel pair (foreground only), via the pair-confusion closed form."""
    fg = true.ravel() != 0
    t, p = true.ravel()[fg], pred.ravel()[fg]
    tp = fn = fp = tn = 0
    for i, j in itertools.combinations(range(t.size), 2):
        same_true, same_pred = t[i] == t[j], p[i] == p[j]
        tp += same_true and same_pred
        fn += same_true and not same_pred
        fp += same_pred and not same_true
        tn += not same_true and not same_pred
    denominator = (tp + fn) * (fn + tn) + (tp + fp) * (fp + tn)
    if denominator == 0:
        return 1.0
    return 2.0 * (tp * tn - fn * fp) / denominator


def two_object_clip() -> np.ndarray:
    """(T=2, H=4, W=4) labels: background 0, object 1 (left block), object 2 (right block)."""
    frame = np.zeros((4, 4), dtype=np.int64)
    frame[1:3, 0:2] = 1
    frame[1:3, 2:4] = 2
    return np.stack([frame, frame])


def test_perfect_prediction_scores_one() -> None:
    true = two_object_clip()[None]
    for metric in (fg_ari, miou, mbo):
        np.testing.assert_allclose(metric(true, true), [1.0])
    assert segmentation_metrics(true, true) == {"fg_ari": 1.0, "miou": 1.0, "mbo": 1.0}


def test_permuted_labels_score_one() -> None:
    true = two_object_clip()[None]
    permutation = np.array([5, 0, 3])  # background -> 5, object 1 -> 0, object 2 -> 3
    pred = permutation[true]
    for metric in (fg_ari, miou, mbo):
        assert metric(true, pred, reduction="mean") == pytest.approx(1.0)


def test_soft_masks_are_argmaxed_over_slots() -> None:
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, size=(3, 2, 5, 5))
    soft = rng.random((3, 2, 6, 5, 5)).astype(np.float32)
    labels = soft.argmax(axis=2)
    for metric in (fg_ari, miou, mbo):
        np.testing.assert_allclose(metric(true, soft), metric(true, labels))
        np.testing.assert_allclose(
            metric(torch.from_numpy(true), torch.from_numpy(soft)), metric(true, labels)
        )


def test_hand_worked_example() -> None:
    # Foreground objects {1,1,1,2,2,2} predicted as {0,0,1,1,2,2}:
    # contingency [[2,1,0],[0,1,2]]; Σ C(n_ij,2)=2, Σ C(a_i,2)=6, Σ C(b_j,2)=3, C(6,2)=15,
    # E = 6·3/15 = 1.2, ARI = (2 − 1.2) / (4.5 − 1.2) = 8/33.
    true = np.array([[[0, 1, 1, 1, 2, 2, 2, 0]]])  # (T=1, H=1, W=8) clip
    pred = np.array([[[4, 0, 0, 1, 1, 2, 2, 3]]])
    assert fg_ari(true, pred) == pytest.approx(8 / 33)
    assert brute_force_fg_ari(true, pred) == pytest.approx(8 / 33)
    # IoUs: obj1–p0 2/3, obj1–p1 1/4, obj2–p1 1/4, obj2–p2 2/3 → matching and best overlap give 2/3.
    assert miou(true, pred) == pytest.approx(2 / 3)
    assert mbo(true, pred) == pytest.approx(2 / 3)


def test_matches_brute_force_pair_counting_on_random_clips() -> None:
    rng = np.random.default_rng(1)
    true = rng.integers(0, 4, size=(6, 2, 3, 4))
    pred = rng.integers(0, 5, size=(6, 2, 3, 4))
    pred[0] = true[0]  # include a perfect clip
    values = fg_ari(true, pred)
    assert values.shape == (6,)
    expected = [brute_force_fg_ari(true[b], pred[b]) for b in range(6)]
    np.testing.assert_allclose(values, expected, rtol=1e-12)


def test_all_one_slot_prediction() -> None:
    # Object 1 has 3 foreground pixels, object 2 has 1; everything predicted as slot 0.
    true = np.array([[[1, 1, 1, 2, 0, 0]]])
    pred = np.zeros_like(true)
    assert fg_ari(true, pred) == 0.0
    assert brute_force_fg_ari(true, pred) == 0.0
    # IoU(obj1, slot0) = 3/4, IoU(obj2, slot0) = 1/4: Hungarian gives (3/4 + 0)/2, best overlap (3/4 + 1/4)/2.
    assert miou(true, pred) == pytest.approx(3 / 8)
    assert mbo(true, pred) == pytest.approx(1 / 2)


def test_single_object_edge_cases() -> None:
    true = np.array([[[0, 3, 3, 3, 0]]])
    # One ground-truth object and one predicted cluster: ARI is 1 by convention.
    assert fg_ari(true, np.array([[[1, 2, 2, 2, 0]]])) == 1.0
    # One object split over two predicted clusters: no agreement beyond chance.
    assert fg_ari(true, np.array([[[1, 2, 2, 1, 0]]])) == pytest.approx(0.0)
    assert miou(true, np.array([[[1, 2, 2, 1, 0]]])) == pytest.approx(2 / 3)


def test_background_only_clip_is_nan_and_skipped_by_mean() -> None:
    true = np.stack([np.zeros((2, 4, 4), dtype=np.int64), two_object_clip()])
    pred = true.copy()
    for metric in (fg_ari, miou, mbo):
        values = metric(true, pred)
        assert np.isnan(values[0]) and values[1] == pytest.approx(1.0)
        assert metric(true, pred, reduction="mean") == pytest.approx(1.0)
        assert math.isnan(metric(true[0], pred[0]))  # a single clip gives a float
    assert all(math.isnan(v) for v in segmentation_metrics(true[:1], pred[:1]).values())


def test_background_pixels_are_ignored() -> None:
    rng = np.random.default_rng(2)
    true = rng.integers(0, 4, size=(4, 3, 8, 8))
    soft = rng.random((4, 3, 5, 8, 8))
    changed = soft.copy()
    background = np.broadcast_to((true == 0)[:, :, None], soft.shape)
    changed[background] = rng.random(int(background.sum()))
    assert not np.array_equal(soft.argmax(2)[true == 0], changed.argmax(2)[true == 0])
    for metric in (fg_ari, miou, mbo):
        np.testing.assert_allclose(metric(true, changed), metric(true, soft))
    assert segmentation_metrics(true, changed) == segmentation_metrics(true, soft)


def test_temporal_identity_swap_scores_lower() -> None:
    true = np.repeat(two_object_clip(), 2, axis=0)  # T = 4
    consistent = true.copy()
    swapped = true.copy()
    swapped[2:] = np.array([0, 2, 1])[true[2:]]  # slots swap objects halfway through the clip
    # Frame by frame the swapped prediction is perfect ...
    for t in range(4):
        assert fg_ari(true[t : t + 1], swapped[t : t + 1]) == 1.0
    # ... but video-level metrics see the inconsistency.
    assert fg_ari(true, consistent) == 1.0
    assert fg_ari(true, swapped) < 0.5
    assert miou(true, swapped) < miou(true, consistent)
    assert mbo(true, swapped) < mbo(true, consistent)


def test_segmentation_metrics_means_and_torch_input() -> None:
    rng = np.random.default_rng(3)
    true = rng.integers(0, 3, size=(3, 2, 6, 6))
    pred = rng.integers(0, 3, size=(3, 2, 6, 6))
    result = segmentation_metrics(torch.from_numpy(true), torch.from_numpy(pred))
    assert set(result) == {"fg_ari", "miou", "mbo"}
    assert result["fg_ari"] == pytest.approx(float(np.mean(fg_ari(true, pred))))
    assert result["miou"] == pytest.approx(float(np.mean(miou(true, pred))))
    assert result["mbo"] == pytest.approx(float(np.mean(mbo(true, pred))))
    assert all(isinstance(v, float) for v in result.values())


def test_large_clip_is_fast_and_bounded() -> None:
    rng = np.random.default_rng(4)
    true = rng.integers(0, 7, size=(4, 24, 64, 64))
    soft = rng.random((4, 24, 7, 64, 64), dtype=np.float32)
    start = time.perf_counter()
    result = segmentation_metrics(true, soft)
    assert time.perf_counter() - start < 2.0
    assert abs(result["fg_ari"]) < 0.01  # random prediction: ARI near chance
    assert 0.0 <= result["miou"] <= result["mbo"] <= 1.0


def test_mse_and_psnr_hand_computed() -> None:
    target = np.zeros((2, 3, 3, 4, 4))
    recon = target.copy()
    recon[1] = 0.5
    np.testing.assert_allclose(mse(recon, target), [0.0, 0.25])
    assert mse(torch.from_numpy(recon), torch.from_numpy(target), reduction="mean") == pytest.approx(0.125)
    values = psnr(recon, target)
    assert values.shape == (2,)
    assert np.isinf(values[0])
    assert values[1] == pytest.approx(10 * math.log10(4.0))
    assert psnr(recon[1:], target[1:], max_value=2.0, reduction="mean") == pytest.approx(
        10 * math.log10(16.0)
    )


def test_shape_errors() -> None:
    with pytest.raises(ValueError, match="does not match"):
        fg_ari(np.zeros((1, 2, 4, 4), dtype=int), np.zeros((1, 2, 4, 5), dtype=int))
    with pytest.raises(TypeError):
        fg_ari(np.zeros((1, 2, 4, 4), dtype=int), np.zeros((1, 2, 4, 4)))


def test_eval_clips_cover_every_episode_deterministically() -> None:
    from psb_rl.evaluation import sample_eval_clips

    # Episode e has frames filled with e, so a clip's value says which episode it came from.
    episodes = [{"frames": np.full((8 + e, 4, 4, 3), e, np.uint8), "masks": np.zeros((8 + e, 4, 4), np.int32)}
                for e in range(5)]
    episodes.append({"frames": np.zeros((3, 4, 4, 3), np.uint8)})  # too short for 6-frame clips: skipped
    frames, masks = sample_eval_clips(episodes, clip_len=6, max_clips=12, seed=3)
    assert frames.shape == (12, 6, 4, 4, 3) and masks.shape == (12, 6, 4, 4)
    assert sorted(set(frames[:, 0, 0, 0, 0].tolist())) == [0, 1, 2, 3, 4]
    again, _ = sample_eval_clips(episodes, clip_len=6, max_clips=12, seed=3)
    np.testing.assert_array_equal(frames, again)
    with pytest.raises(ValueError, match="no held-out episode has 20 frames"):
        sample_eval_clips(episodes, clip_len=20, max_clips=4)


def test_evaluate_clips_separates_tracking_from_per_frame_segmentation() -> None:
    from types import SimpleNamespace

    from psb_rl.evaluation import evaluate_clips

    class SwappingModel(torch.nn.Module):
        """Segments every frame perfectly (slot k = object k) but swaps slots 1 and 2 half-way."""

        def __init__(self, masks: np.ndarray) -> None:
            super().__init__()
            self.config = SimpleNamespace(image_size=masks.shape[-1], num_slots=3)
            self.weight = torch.nn.Parameter(torch.zeros(1))
            self.masks = torch.as_tensor(masks)

        def forward(self, video: torch.Tensor) -> SimpleNamespace:
            labels = self.masks.clone()
            later = labels[:, labels.shape[1] // 2 :]
            labels[:, labels.shape[1] // 2 :] = torch.where(later == 1, 2, torch.where(later == 2, 1, later))
            soft = torch.nn.functional.one_hot(labels.long(), 3).permute(0, 1, 4, 2, 3).float()
            slots = torch.eye(3).expand(*labels.shape[:2], 3, 3)
            return SimpleNamespace(recon=video, masks=soft, slots=slots)

    masks = np.zeros((2, 4, 8, 8), np.int64)
    masks[:, :, 1:4, 1:4], masks[:, :, 5:7, 5:7] = 1, 2
    frames = np.zeros((2, 4, 8, 8, 3), np.uint8)
    frames[masks == 1], frames[masks == 2] = (255, 0, 0), (0, 255, 0)  # the objects are drawn
    scores = evaluate_clips(SwappingModel(masks), frames, masks)
    assert scores["fg_ari_frame"] == pytest.approx(1.0)  # every frame alone is perfect
    assert scores["fg_ari"] < 0.5  # the swap breaks the video-level score
    assert scores["switch_rate"] == pytest.approx(2 / 6)  # both objects switch once in 3 steps each
    # the usual IoU counts the background a segment covers: never above the project's mIoU / mBO
    assert scores["miou_standard"] <= scores["miou"] and scores["mbo_standard"] <= scores["mbo"]
    assert scores["object_recall"] == {"object": 1.0}  # recall is per frame: swaps do not lower it
    health = scores["health"]
    assert health["slots_in_use"] == 3 and health["slot_similarity"] == 0.0 and not health["collapsed"]
    categories = np.broadcast_to(np.array([-1, 1, 0]), (2, 4, 3))  # label 1 -> "b", label 2 -> "a"
    named = evaluate_clips(SwappingModel(masks), frames, masks, categories=categories, category_names=("a", "b"))
    assert named["object_recall"] == {"a": 1.0, "b": 1.0}
    assert "object_recall" not in evaluate_clips(SwappingModel(masks), frames, None)


def test_object_errors_hand_made_frame() -> None:
    true = np.zeros((8, 8), dtype=np.int64)
    true[0:2, 0:2] = 1  # gets its own segment
    true[0:2, 6:8] = 2  # shares segment 5 with object 3, right next to it
    true[2:4, 6:8] = 3
    true[6:8, 0:2] = 4  # predicted as the background segment
    true[6:8, 4:8] = 5  # cut in half between segments 6 and 7
    pred = np.zeros((8, 8), dtype=np.int64)
    pred[0:2, 0:2] = 1
    pred[0:4, 6:8] = 5
    pred[6:8, 4:6] = 6
    pred[6:8, 6:8] = 7
    outcomes, pairs = object_errors(true, pred)
    assert outcomes == {1: "own", 2: "merged", 3: "merged", 4: "background", 5: "split"}
    assert len(pairs) == 10  # 5 objects
    merged = [(d, m) for d, m in pairs if m]
    assert merged == [(2.0, True)]  # objects 2 and 3: centroids (0.5, 6.5) and (2.5, 6.5)


def test_object_errors_perfect_and_errors() -> None:
    true = np.zeros((6, 6), dtype=np.int64)
    true[1:3, 1:3], true[4:6, 4:6] = 1, 2
    outcomes, pairs = object_errors(true, true * 3)  # any relabelling of a perfect segmentation
    assert outcomes == {1: "own", 2: "own"} and pairs == [(3.0, False)]
    with pytest.raises(ValueError, match="label maps of one shape"):
        object_errors(true, true[None])
    with pytest.raises(ValueError, match=">= 0"):
        object_errors(true, -np.ones_like(true))


def test_slot_switches_hand_made_clip() -> None:
    """Objects 1 (top left) and 2 (bottom right), 2×2 each, five frames: their segments (1 and 2) swap at
    t = 2, object 1 falls into the background's segment 0 at t = 3, then moves to the unused segment 4
    at t = 4; object 2 hides (one pixel) at t = 3 and is not compared across the gap."""
    true = np.zeros((5, 6, 6), dtype=np.int64)
    true[:, 0:2, 0:2] = 1
    true[:, 4:6, 4:6] = 2
    true[3, 4:6, 4:6], true[3, 5, 5] = 0, 2
    pred = np.zeros_like(true)
    for t, (a, b) in enumerate([(1, 2), (1, 2), (2, 1), (0, 3), (4, 3)]):
        pred[t, 0:2, 0:2], pred[t, 4:6, 4:6] = a, b
    pred[3, 5, 5] = 3
    switches, compared = slot_switches(true, pred)
    # Object 1: t = 1..4; object 2: t = 1, 2 (hidden at 3, so 4 has no predecessor).
    assert compared.tolist() == [0, 2, 2, 1, 1]
    assert [(s.step, s.label, s.previous, s.current, s.into) for s in switches] == [
        (2, 1, 1, 2, "object"), (2, 2, 2, 1, "object"), (3, 1, 2, 0, "background"), (4, 1, 0, 4, "free"),
    ]
    assert switches[0].nearest == switches[1].nearest == 4.0 and switches[2].nearest == float("inf")
    perfect, steps = slot_switches(true, true * 5)
    assert perfect == [] and steps.sum() == 6
    with pytest.raises(ValueError, match="label clips of one shape"):
        slot_switches(true, true[0])


def test_standard_iou_counts_background_in_segment_areas() -> None:
    # one object of 4 pixels; the predicted segment covers it and 4 background pixels
    true = np.zeros((1, 4, 4), dtype=np.int64)
    true[0, :2, :2] = 1
    pred = np.zeros_like(true)
    pred[0, :2, :] = 1  # 8 pixels: the object and 4 of background
    assert miou(true, pred) == 1.0 and mbo(true, pred) == 1.0  # background left out of the area
    assert miou(true, pred, standard_iou=True) == pytest.approx(4 / 8)
    assert mbo(true, pred, standard_iou=True) == pytest.approx(4 / 8)
    # against a direct computation on random clips: the usual IoU is never higher
    rng = np.random.default_rng(0)
    true = rng.integers(0, 4, (3, 2, 6, 6))
    pred = rng.integers(0, 3, (3, 2, 6, 6))
    expected = []
    for b in range(3):
        objects = [g for g in range(1, 4) if (true[b] == g).any()]
        iou = np.array([[((true[b] == g) & (pred[b] == k)).sum() / ((true[b] == g) | (pred[b] == k)).sum()
                         for k in range(3)] for g in objects])
        expected.append(iou.max(axis=1).mean())
    np.testing.assert_allclose(mbo(true, pred, standard_iou=True), expected)
    assert (miou(true, pred, standard_iou=True) <= miou(true, pred) + 1e-12).all()


# ---------------------------------------------------------------------------------------- object recall
def recall_scene() -> np.ndarray:
    """One frame (1, 1, 16, 16): object 1 a 4×4 block at rows/cols 2-5, object 2 a 2×2 block at 10-11."""
    true = np.zeros((1, 1, 16, 16), dtype=np.int64)
    true[0, 0, 2:6, 2:6] = 1
    true[0, 0, 10:12, 10:12] = 2
    return true


CATEGORIES = np.array([-1, 0, 1])  # label 1 -> "block", label 2 -> "dot"
NAMES = ("block", "dot")


def test_object_recall_found_and_background_slot():
    true = recall_scene()
    pred = np.zeros_like(true)  # slot 0 holds the background (and so is the background slot)
    pred[true == 1] = 1
    assert object_recall(true, pred, CATEGORIES, NAMES) == {"block": 1.0, "dot": 0.0}  # the dot is in slot 0
    pred[true == 2] = 2
    assert object_recall(true, pred, CATEGORIES, NAMES) == {"block": 1.0, "dot": 1.0}
    assert background_slots(true, pred).tolist() == [0]


def test_object_recall_rejects_a_loose_slot():
    # a second, empty frame all in slot 0 keeps slot 0 the background slot whatever slot 1 covers
    true = np.concatenate([recall_scene(), np.zeros_like(recall_scene())], axis=1)
    pred = np.zeros_like(true)
    pred[0, 0, :, :10] = 1  # covers the whole block but is 160 px; only the 64 px of the 8×8 margin are near it
    assert object_recall(true, pred, CATEGORIES, NAMES)["block"] == 0.0
    # the same slot passes the coverage test alone (precision 0), as any big slot would
    assert object_recall(true, pred, CATEGORIES, NAMES, precision=0.0)["block"] == 1.0


def test_object_recall_split_object():
    true = recall_scene()
    pred = np.zeros_like(true)
    pred[0, 0, 2:6, 2:4] = 1  # two halves of the block: 50 % each counts (>=) ...
    pred[0, 0, 2:6, 4:6] = 2
    assert object_recall(true, pred, CATEGORIES, NAMES)["block"] == 1.0
    pred[0, 0, 2:6, 5:6] = 3  # ... three parts (8, 4, 4 px of 16) do not
    pred[0, 0, 2:4, 2:4] = 4
    assert object_recall(true, pred, CATEGORIES, NAMES)["block"] == 0.0


def test_object_recall_margin():
    true = recall_scene()
    pred = np.zeros_like(true)
    pred[0, 0, 8:14, 8:14] = 2  # the dot (4 px) plus a 2-px ring: 36 px, all within the 2-px margin
    assert object_recall(true, pred, CATEGORIES, NAMES)["dot"] == 1.0
    assert object_recall(true, pred, CATEGORIES, NAMES, margin=1)["dot"] == 0.0  # 16 of 36 px near it
    pred[0, 0, 7:15, 7:15] = 2  # a 3-px ring: 36 of 64 px within the margin still passes
    assert object_recall(true, pred, CATEGORIES, NAMES)["dot"] == 1.0
    pred[0, 0, 6:16, 6:16] = 2  # a 4-px ring: 36 of 100 px fails
    assert object_recall(true, pred, CATEGORIES, NAMES)["dot"] == 0.0


def test_object_recall_counts_object_frames_per_clip_categories_and_soft_masks():
    true = np.concatenate([recall_scene(), recall_scene()], axis=1)  # one clip, two frames
    soft = np.zeros((1, 2, 3, 16, 16))
    soft[:, :, 0] = 1.0
    soft[0, 0, 0][true[0, 0] == 1] = 0.0  # frame 0: block in slot 1, frame 1: block in the background slot
    soft[0, 0, 1][true[0, 0] == 1] = 1.0
    per_clip = np.array([[-1, 1, 0]])  # categories given per clip: label 1 -> "dot" here
    assert object_recall_counts(true, soft, per_clip) == {0: (0, 2), 1: (1, 2)}
    assert object_recall(true, soft, per_clip, NAMES) == {"block": 0.0, "dot": 0.5}

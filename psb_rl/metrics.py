"""Video-level segmentation and reconstruction metrics.

Segmentation metrics compare a ground-truth labelling of a clip with the model's segmentation, the
argmax over slots of its alpha masks. Every segmentation metric is computed over all ``T·H·W`` pixels of
a clip *jointly* — a slot is one segment across the whole clip — so a model whose slots swap objects
over time scores lower than one whose slot identities stay consistent.

Conventions shared by all segmentation metrics:

- ground-truth label ``0`` is background; every other label present in a clip is one object;
- ground-truth background pixels are excluded from everything, including the areas of predicted
  segments, so changing predictions only on ground-truth background pixels never changes a metric.
  This makes :func:`miou` and :func:`mbo` higher than the usual IoU, where a segment's area includes
  the background it covers; ``standard_iou=True`` gives the usual one (docs/pretraining.md compares them);
- a clip without any foreground pixel has no defined score: it gets ``NaN``, and the means (the
  ``reduction="mean"`` results and :func:`segmentation_metrics`) skip it via ``np.nanmean``; if every clip
  is ``NaN`` the mean is ``NaN`` too.

All counting is done on one contingency table per clip (built with a single ``np.bincount`` over the
whole batch) in integer arithmetic, turned into float64 only for the final ratios.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import numpy as np
import torch
from scipy.optimize import linear_sum_assignment

ArrayLike = np.ndarray | torch.Tensor
Reduction = Literal["none", "mean"]

# Label spaces larger than this are compressed with ``np.unique`` before counting.
_MAX_DIRECT_LABELS = 256


def _to_numpy(x: ArrayLike) -> np.ndarray:
    """Return ``x`` as a numpy array (detached and moved to CPU when it is a torch tensor)."""
    if isinstance(x, torch.Tensor):
        x = x.detach().cpu()
        if x.is_floating_point() and x.dtype not in (torch.float32, torch.float64):
            x = x.float()  # numpy has no bfloat16
        return x.numpy()
    return np.asarray(x)


def _as_labels(true_masks: ArrayLike, pred_masks: ArrayLike) -> tuple[np.ndarray, np.ndarray, bool]:
    """Bring ground truth and prediction to integer label arrays of shape ``(B, T·H·W)``.

    :param true_masks: int ``(B, T, H, W)`` or ``(T, H, W)`` labels, 0 = background.
    :param pred_masks: int labels of the same shape as ``true_masks``, or soft masks with an extra slot
        axis ``(B, T, N, H, W)`` / ``(T, N, H, W)`` (reduced with argmax over ``N``).
    :return: ``(true, pred, single)``: int64 ``(B, P)`` arrays and whether the input was a single clip.
    """
    true = _to_numpy(true_masks)
    pred = _to_numpy(pred_masks)
    if true.ndim not in (3, 4):
        raise ValueError(f"true_masks must be (B, T, H, W) or (T, H, W) labels; got shape {true.shape}.")
    if not (np.issubdtype(true.dtype, np.integer) or true.dtype == np.bool_):
        raise TypeError(f"true_masks must hold integer labels; got dtype {true.dtype}.")
    single = true.ndim == 3
    if pred.ndim == true.ndim + 1:
        # Soft masks (..., T, N, H, W): the segment of a pixel is its argmax slot.
        pred = pred.argmax(axis=-3)
    elif pred.ndim == true.ndim:
        if not (np.issubdtype(pred.dtype, np.integer) or pred.dtype == np.bool_):
            raise TypeError(
                f"pred_masks with the same shape as true_masks must be integer labels; got dtype {pred.dtype}. "
                "Pass soft masks with a slot axis (B, T, N, H, W) instead."
            )
    else:
        raise ValueError(
            f"pred_masks must be labels shaped like true_masks {true.shape} or soft masks with a slot axis "
            f"(..., T, N, H, W); got shape {pred.shape}."
        )
    if pred.shape != true.shape:
        raise ValueError(
            f"pred_masks segmentation shape {pred.shape} does not match true_masks {true.shape}."
        )
    if single:
        true, pred = true[None], pred[None]
    batch = true.shape[0]
    return true.reshape(batch, -1).astype(np.int64), pred.reshape(batch, -1).astype(np.int64), single


def _compact(labels: np.ndarray, keep_zero: bool) -> np.ndarray:
    """Map labels to ``0..K-1`` when they are negative or very large (``0`` stays ``0`` if ``keep_zero``)."""
    if labels.size == 0 or (labels.min() >= 0 and labels.max() < _MAX_DIRECT_LABELS):
        return labels
    _, inverse = np.unique(labels, return_inverse=True)
    inverse = inverse.reshape(labels.shape)
    if keep_zero:
        # Reserve index 0 for background, shift every other label up by one.
        inverse = np.where(labels == 0, 0, inverse + 1)
    return inverse


def contingency_tables(
    true_masks: ArrayLike, pred_masks: ArrayLike, keep_background: bool = False
) -> tuple[np.ndarray, bool]:
    """Per-clip contingency tables between foreground ground-truth objects and predicted segments.

    :param true_masks: int ``(B, T, H, W)`` (or one clip ``(T, H, W)``) labels, 0 = background.
    :param pred_masks: int labels shaped like ``true_masks``, or soft masks ``(B, T, N, H, W)`` /
        ``(T, N, H, W)`` (argmax over ``N``).
    :param keep_background: keep ground-truth background as row 0 (``(B, 1 + G, K)`` tables).
    :return: ``(tables, single)``: int64 ``(B, G, K)`` where ``tables[b, g, k]`` counts the pixels of clip
        ``b`` (over all ``T·H·W`` jointly) with ground-truth label ``g + 1`` and predicted segment ``k``;
        ground-truth background is dropped. ``single`` tells whether the input was one clip.
    """
    true, pred, single = _as_labels(true_masks, pred_masks)
    true = _compact(true, keep_zero=True)
    pred = _compact(pred, keep_zero=False)
    batch = true.shape[0]
    n_true = int(true.max()) + 1 if true.size else 1
    n_pred = int(pred.max()) + 1 if pred.size else 1
    clip = np.arange(batch, dtype=np.int64)[:, None]
    index = (clip * n_true + true) * n_pred + pred
    tables = np.bincount(index.ravel(), minlength=batch * n_true * n_pred).reshape(batch, n_true, n_pred)
    return (tables if keep_background else tables[:, 1:, :]), single


def _reduce(values: np.ndarray, reduction: Reduction, single: bool) -> np.ndarray | float:
    """Apply ``reduction`` to per-clip ``values`` ``(B,)``; a single-clip input gives a float."""
    if reduction == "mean" or single:
        return _nanmean(values)
    if reduction == "none":
        return values
    raise ValueError(f"reduction must be 'none' or 'mean'; got {reduction!r}.")


def _nanmean(values: np.ndarray) -> float:
    """Mean ignoring NaNs; NaN (without a warning) when every value is NaN or there are none."""
    if values.size == 0 or np.all(np.isnan(values)):
        return float("nan")
    return float(np.nanmean(values))


def _pairs(counts: np.ndarray) -> np.ndarray:
    """Number of unordered pairs ``n·(n-1)/2`` of each count, exact in int64."""
    counts = counts.astype(np.int64)
    return counts * (counts - 1) // 2


def ari_from_contingency(tables: np.ndarray) -> np.ndarray:
    """Adjusted Rand index of each contingency table.

    ``ARI = (Σ_ij C(n_ij,2) − E) / (½(Σ_i C(a_i,2) + Σ_j C(b_j,2)) − E)`` with
    ``E = Σ_i C(a_i,2)·Σ_j C(b_j,2) / C(n,2)`` (Hubert & Arabie, 1985).

    Edge cases:

    - ``n = 0`` pixels: ``NaN``;
    - zero denominator: this happens exactly when both clusterings are a single cluster (this includes
      ``n = 1``) or both put every pixel in its own cluster; the clusterings are then identical and the ARI
      is ``1.0``, as in the SAVi / Slot Attention reference implementations (one cluster each → 1) and
      scikit-learn.

    :param tables: int ``(B, G, K)`` contingency tables.
    :return: float64 ``(B,)`` ARI values.
    """
    tables = np.asarray(tables, dtype=np.int64)
    n = tables.sum(axis=(1, 2))
    total = _pairs(n)
    sum_comb = _pairs(tables).sum(axis=(1, 2))
    sum_a = _pairs(tables.sum(axis=2)).sum(axis=1)
    sum_b = _pairs(tables.sum(axis=1)).sum(axis=1)
    # Exact integer test of the zero-denominator cases: one cluster each (all pairs together) or all
    # singletons each (no pair together).
    degenerate = ((sum_a == total) & (sum_b == total)) | ((sum_a == 0) & (sum_b == 0))
    total_f = np.maximum(total, 1).astype(np.float64)
    expected = sum_a.astype(np.float64) * (sum_b.astype(np.float64) / total_f)
    numerator = sum_comb.astype(np.float64) - expected
    denominator = 0.5 * (sum_a + sum_b).astype(np.float64) - expected
    ari = numerator / np.where(degenerate, 1.0, denominator)
    ari = np.where(degenerate, 1.0, ari)
    return np.where(n == 0, np.nan, ari)


def fg_ari(true_masks: ArrayLike, pred_masks: ArrayLike, reduction: Reduction = "none") -> np.ndarray | float:
    """Video-level foreground adjusted Rand index.

    The ARI between the ground-truth objects and the predicted segments over all ``T·H·W`` pixels of a
    clip jointly, ground-truth background pixels excluded. Permuting slot indices does not change it;
    slots that swap objects over time lower it.

    Edge cases: a clip whose foreground is one ground-truth object and lies in one predicted segment
    scores ``1.0`` (SAVi / Slot Attention convention: ARI is 1 when both clusterings have one cluster); a
    clip with ≥ 2 objects all predicted as one segment scores ``0.0``; a clip with no foreground pixel
    scores ``NaN`` and is skipped by the mean.

    :param true_masks: int ``(B, T, H, W)`` labels (or a single clip ``(T, H, W)``), 0 = background.
    :param pred_masks: int labels shaped like ``true_masks``, or soft masks ``(B, T, N, H, W)`` /
        ``(T, N, H, W)`` whose argmax over ``N`` is the segmentation. numpy arrays or torch tensors.
    :param reduction: ``"none"``: per-clip float64 ``(B,)`` array; ``"mean"``: ``nanmean`` over clips as a
        float. A single-clip input always gives a float.
    :return: FG-ARI per clip ``(B,)``, or a float.
    """
    tables, single = contingency_tables(true_masks, pred_masks)
    return _reduce(ari_from_contingency(tables), reduction, single)


def _iou_matrices(tables: np.ndarray, background: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """IoU between every ground-truth object and predicted segment, from contingency tables.

    Areas are measured over ground-truth foreground pixels only, unless ``background`` is given.

    :param tables: int ``(B, G, K)`` contingency tables.
    :param background: int ``(B, K)`` ground-truth background pixels in each predicted segment, added to
        the segments' areas (the usual IoU); None leaves them out.
    :return: ``(iou, present)``: float64 ``(B, G, K)`` IoUs and bool ``(B, G)``, whether each ground-truth
        object occurs in the clip.
    """
    intersection = tables.astype(np.float64)
    true_area = intersection.sum(axis=2, keepdims=True)
    pred_area = intersection.sum(axis=1, keepdims=True)
    if background is not None:
        pred_area = pred_area + background[:, None, :]
    union = true_area + pred_area - intersection
    iou = intersection / np.maximum(union, 1.0)  # union == 0 implies intersection == 0
    return iou, true_area[..., 0] > 0


def _clip_ious(true_masks: ArrayLike, pred_masks: ArrayLike, standard_iou: bool) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(iou, present, single)`` of :func:`_iou_matrices` for a batch of clips."""
    tables, single = contingency_tables(true_masks, pred_masks, keep_background=standard_iou)
    if standard_iou:
        iou, present = _iou_matrices(tables[:, 1:], background=tables[:, 0])
    else:
        iou, present = _iou_matrices(tables)
    return iou, present, single


def _miou_from_iou(iou: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Hungarian-matched mean IoU per clip from ``(B, G, K)`` IoUs and ``(B, G)`` object presence."""
    values = np.full(iou.shape[0], np.nan)
    for b in range(iou.shape[0]):
        clip_iou = iou[b][present[b]]
        if clip_iou.shape[0] == 0:
            continue
        rows, cols = linear_sum_assignment(clip_iou, maximize=True)
        values[b] = clip_iou[rows, cols].sum() / clip_iou.shape[0]
    return values


def _mbo_from_iou(iou: np.ndarray, present: np.ndarray) -> np.ndarray:
    """Mean best overlap per clip from ``(B, G, K)`` IoUs and ``(B, G)`` object presence."""
    best = iou.max(axis=2) if iou.shape[2] > 0 else np.zeros(iou.shape[:2])
    count = present.sum(axis=1)
    total = np.where(present, best, 0.0).sum(axis=1)
    return np.where(count > 0, total / np.maximum(count, 1), np.nan)


def miou(
    true_masks: ArrayLike, pred_masks: ArrayLike, reduction: Reduction = "none", standard_iou: bool = False
) -> np.ndarray | float:
    """Mean IoU after Hungarian matching of predicted segments to ground-truth objects, per clip.

    IoUs are computed over the whole clip (``T·H·W`` jointly) and over ground-truth foreground pixels
    only. Each ground-truth object is matched to at most one predicted segment (and vice versa) so that
    the total IoU is maximal; the score is the mean over the clip's ground-truth objects, unmatched
    objects (more objects than segments) counting 0. A clip without foreground is ``NaN``.

    :param true_masks: int ``(B, T, H, W)`` labels (or a single clip ``(T, H, W)``), 0 = background.
    :param pred_masks: int labels shaped like ``true_masks``, or soft masks ``(B, T, N, H, W)`` /
        ``(T, N, H, W)`` (argmax over ``N``).
    :param reduction: ``"none"`` (per-clip ``(B,)`` array) or ``"mean"`` (``nanmean`` float). A single-clip
        input always gives a float.
    :param standard_iou: count the ground-truth background pixels a predicted segment covers in its area,
        as the usual IoU does (lower or equal).
    :return: mIoU per clip ``(B,)``, or a float.
    """
    iou, present, single = _clip_ious(true_masks, pred_masks, standard_iou)
    return _reduce(_miou_from_iou(iou, present), reduction, single)


def mbo(
    true_masks: ArrayLike, pred_masks: ArrayLike, reduction: Reduction = "none", standard_iou: bool = False
) -> np.ndarray | float:
    """Mean best overlap: for each ground-truth object its best IoU over predicted segments, averaged.

    IoUs are over the whole clip (``T·H·W`` jointly) and over ground-truth foreground pixels only; one
    predicted segment may be the best match of several objects. A clip without foreground is ``NaN``.

    :param true_masks: int ``(B, T, H, W)`` labels (or a single clip ``(T, H, W)``), 0 = background.
    :param pred_masks: int labels shaped like ``true_masks``, or soft masks ``(B, T, N, H, W)`` /
        ``(T, N, H, W)`` (argmax over ``N``).
    :param reduction: ``"none"`` (per-clip ``(B,)`` array) or ``"mean"`` (``nanmean`` float). A single-clip
        input always gives a float.
    :param standard_iou: count the ground-truth background pixels a predicted segment covers in its area,
        as the usual IoU does (lower or equal).
    :return: mBO per clip ``(B,)``, or a float.
    """
    iou, present, single = _clip_ious(true_masks, pred_masks, standard_iou)
    return _reduce(_mbo_from_iou(iou, present), reduction, single)


def segmentation_metrics(true_masks: ArrayLike, pred_masks: ArrayLike) -> dict[str, float]:
    """FG-ARI, mIoU and mBO averaged over clips (clips without foreground skipped).

    :param true_masks: int ``(B, T, H, W)`` labels (or a single clip ``(T, H, W)``), 0 = background.
    :param pred_masks: int labels shaped like ``true_masks``, or soft masks ``(B, T, N, H, W)`` /
        ``(T, N, H, W)`` (argmax over ``N``). numpy arrays or torch tensors.
    :return: ``{"fg_ari": float, "miou": float, "mbo": float}``.
    """
    tables, _ = contingency_tables(true_masks, pred_masks)
    iou, present = _iou_matrices(tables)
    return {
        "fg_ari": _nanmean(ari_from_contingency(tables)),
        "miou": _nanmean(_miou_from_iou(iou, present)),
        "mbo": _nanmean(_mbo_from_iou(iou, present)),
    }


def _as_float_clips(recon: ArrayLike, target: ArrayLike) -> tuple[np.ndarray, np.ndarray]:
    """Both arrays as float64 ``(B, -1)`` (leading axis = clip)."""
    r = _to_numpy(recon).astype(np.float64)
    t = _to_numpy(target).astype(np.float64)
    if r.shape != t.shape:
        raise ValueError(f"recon shape {r.shape} does not match target shape {t.shape}.")
    if r.ndim == 0:
        raise ValueError("recon and target need at least one (clip) axis.")
    return r.reshape(r.shape[0], -1), t.reshape(t.shape[0], -1)


def mse(recon: ArrayLike, target: ArrayLike, reduction: Reduction = "none") -> np.ndarray | float:
    """Mean squared error per clip.

    :param recon: float ``(B, ...)`` reconstructions in ``[0, 1]`` (e.g. ``(B, T, 3, H, W)``).
    :param target: float ``(B, ...)`` targets, same shape.
    :param reduction: ``"none"``: per-clip float64 ``(B,)`` array (mean over all non-leading axes);
        ``"mean"``: the mean of those as a float.
    :return: MSE per clip ``(B,)``, or a float.
    """
    r, t = _as_float_clips(recon, target)
    values = np.mean((r - t) ** 2, axis=1)
    return _reduce(values, reduction, single=False)


def psnr(
    recon: ArrayLike, target: ArrayLike, max_value: float = 1.0, reduction: Reduction = "none"
) -> np.ndarray | float:
    """Peak signal-to-noise ratio per clip: ``10·log10(max_value² / MSE_clip)`` in dB.

    A perfect reconstruction (MSE 0) gives ``inf``; the ``"mean"`` reduction averages per-clip PSNRs.

    :param recon: float ``(B, ...)`` reconstructions in ``[0, max_value]``.
    :param target: float ``(B, ...)`` targets, same shape.
    :param max_value: the largest possible pixel value (1.0 for ``[0, 1]`` images).
    :param reduction: ``"none"``: per-clip float64 ``(B,)`` array; ``"mean"``: their mean as a float.
    :return: PSNR per clip ``(B,)``, or a float.
    """
    errors = np.asarray(mse(recon, target, reduction="none"))
    with np.errstate(divide="ignore"):
        values = 10.0 * np.log10(float(max_value) ** 2 / errors)
    return _reduce(values, reduction, single=False)


#: Outcomes of :func:`object_errors`, in the order they are tested.
OBJECT_OUTCOMES: tuple[str, ...] = ("background", "merged", "split", "own")


def _segment_maps(true: ArrayLike, pred: ArrayLike, shape: str) -> tuple[np.ndarray, np.ndarray, int]:
    """Ground-truth labels and predicted segment ids as int64 arrays of ``shape`` (``"(H, W) label maps"``
    or ``"(T, H, W) label clips"``), checked, and the number of segment ids."""
    true, pred = _to_numpy(true).astype(np.int64), _to_numpy(pred).astype(np.int64)
    if true.ndim != shape.count(",") + 1 or true.shape != pred.shape:
        raise ValueError(f"expected two {shape} of one shape, got {true.shape} and {pred.shape}")
    if pred.min(initial=0) < 0:
        raise ValueError("predicted segment ids must be >= 0")
    return true, pred, int(pred.max(initial=0)) + 1


def object_errors(
    true_frame: ArrayLike, pred_frame: ArrayLike, split_threshold: float = 0.7
) -> tuple[dict[int, str], list[tuple[float, bool]]]:
    """Where one frame's segmentation goes wrong, object by object (a diagnostic, not a score).

    Each ground-truth object gets the predicted segment holding most of its pixels (its *majority
    segment*) and one outcome, the first that applies: ``"background"`` (that segment also holds the
    most ground-truth background pixels), ``"merged"`` (another object has the same majority segment),
    ``"split"`` (the majority segment holds less than ``split_threshold`` of the object) or ``"own"``.

    :param true_frame: int ``(H, W)`` labels, 0 = background.
    :param pred_frame: int ``(H, W)`` predicted segment ids (e.g. the argmax over slots).
    :param split_threshold: smallest fraction of an object its majority segment must hold to count as ``"own"``.
    :return: ``{object label: outcome}`` and, for every pair of objects, ``(distance, merged)``: the
        Chebyshev distance in pixels between their centroids and whether they share a majority segment.
    """
    true, pred, size = _segment_maps(true_frame, pred_frame, "(H, W) label maps")
    background = true == 0
    background_segment = int(np.bincount(pred[background], minlength=size).argmax()) if background.any() else -1
    labels = [int(v) for v in np.unique(true) if v != 0]
    majority, fraction, centroid = {}, {}, {}
    for label in labels:
        inside = true == label
        counts = np.bincount(pred[inside], minlength=size)
        majority[label] = int(counts.argmax())
        fraction[label] = counts.max() / counts.sum()
        centroid[label] = np.argwhere(inside).mean(axis=0)
    outcomes: dict[int, str] = {}
    for label in labels:
        segment = majority[label]
        if segment == background_segment:
            outcomes[label] = "background"
        elif any(majority[other] == segment for other in labels if other != label):
            outcomes[label] = "merged"
        elif fraction[label] < split_threshold:
            outcomes[label] = "split"
        else:
            outcomes[label] = "own"
    pairs = [
        (float(np.abs(centroid[a] - centroid[b]).max()), majority[a] == majority[b])
        for i, a in enumerate(labels)
        for b in labels[i + 1 :]
    ]
    return outcomes, pairs


@dataclass
class SlotSwitch:
    """One change of an object's majority segment between consecutive frames (see :func:`slot_switches`)."""

    step: int
    """frame ``t`` at which the object is first seen in its new segment"""
    label: int
    """ground-truth object label"""
    previous: int
    """majority segment at ``t - 1``"""
    current: int
    """majority segment at ``t``"""
    into: str
    """what ``current`` held at ``t - 1``: ``"object"`` (the majority segment of another object),
    ``"background"`` (the segment holding most background pixels) or ``"free"`` (neither)"""
    nearest: float
    """Chebyshev distance in pixels from the object's centroid to the nearest other visible object's at
    ``t`` (``inf`` when it is alone)"""


def slot_switches(
    true_clip: ArrayLike, pred_clip: ArrayLike, min_pixels: int = 3
) -> tuple[list[SlotSwitch], np.ndarray]:
    """Where a clip's segments fail to keep their objects (a tracking diagnostic, not a score).

    An object's *majority segment* at a frame is the predicted segment holding most of its pixels, as in
    :func:`object_errors`. Every pair of consecutive frames in which the object shows at least
    ``min_pixels`` pixels is one *object-step*; a switch is an object-step whose majority segment changed.
    A model with perfect video-level segmentation has no switches; per-frame segmentation can be
    perfect with a switch at every step.

    :param true_clip: int ``(T, H, W)`` labels, 0 = background.
    :param pred_clip: int ``(T, H, W)`` predicted segment ids (e.g. the argmax over slots).
    :param min_pixels: fewest visible pixels for an object to count at a frame (hidden objects are skipped).
    :return: the switches and the object-steps compared at each frame, int ``(T,)`` (0 at ``t = 0``).
    """
    true, pred, size = _segment_maps(true_clip, pred_clip, "(T, H, W) label clips")
    switches: list[SlotSwitch] = []
    compared = np.zeros(true.shape[0], dtype=np.int64)
    before: dict[int, int] = {}  # label -> majority segment at t - 1 (visible objects only)
    before_background = -1
    for t in range(true.shape[0]):
        now, centroid = {}, {}
        for label in (int(v) for v in np.unique(true[t]) if v != 0):
            inside = true[t] == label
            if inside.sum() >= min_pixels:
                now[label] = int(np.bincount(pred[t][inside], minlength=size).argmax())
                centroid[label] = np.argwhere(inside).mean(axis=0)
        for label, segment in now.items():
            if label not in before:
                continue
            compared[t] += 1
            if segment == before[label]:
                continue
            others = [float(np.abs(centroid[label] - c).max()) for other, c in centroid.items() if other != label]
            held = [other for other, s in before.items() if s == segment and other != label]
            into = "object" if held else "background" if segment == before_background else "free"
            switches.append(SlotSwitch(t, label, before[label], segment, into, min(others, default=float("inf"))))
        background = true[t] == 0
        before_background = int(np.bincount(pred[t][background], minlength=size).argmax()) if background.any() else -1
        before = now
    return switches, compared


#: Defaults of :func:`object_recall`.
RECALL_COVERAGE: float = 0.5
RECALL_PRECISION: float = 0.5
RECALL_MARGIN: int = 2


def background_slots(true_clips: ArrayLike, pred_clips: ArrayLike) -> np.ndarray:
    """The *background slot* of each clip: the predicted segment holding the most ground-truth background
    pixels over the whole clip (``-1`` for a clip without background pixels).

    :param true_clips: int ``(B, T, H, W)`` labels, 0 = background.
    :param pred_clips: int ``(B, T, H, W)`` predicted segment ids (>= 0).
    :return: int64 ``(B,)``.
    """
    true, pred = _to_numpy(true_clips).astype(np.int64), _to_numpy(pred_clips).astype(np.int64)
    size = int(pred.max(initial=0)) + 1
    out = np.full(true.shape[0], -1, dtype=np.int64)
    for b in range(true.shape[0]):
        background = true[b] == 0
        if background.any():
            out[b] = int(np.bincount(pred[b][background], minlength=size).argmax())
    return out


def object_recall_counts(
    true_clips: ArrayLike,
    pred_clips: ArrayLike,
    categories: ArrayLike,
    coverage: float = RECALL_COVERAGE,
    precision: float = RECALL_PRECISION,
    margin: int = RECALL_MARGIN,
) -> dict[int, tuple[int, int]]:
    """Found and total object-frames per category (the counts behind :func:`object_recall`).

    :param true_clips: int ``(B, T, H, W)`` instance labels (or one clip ``(T, H, W)``), 0 = background.
    :param pred_clips: int predicted segment ids shaped like ``true_clips``, or soft masks with a slot axis
        ``(B, T, N, H, W)`` / ``(T, N, H, W)`` (argmax over ``N``).
    :param categories: int category index of each label: ``(L,)`` for every clip, ``(B, L)`` per clip or
        ``(B, T, L)`` per frame (index = label, ``-1`` = not an object); labels beyond ``L`` are skipped.
    :param coverage: least fraction of the object's pixels the slot's argmax must cover.
    :param precision: least fraction of the slot's argmax pixels that must lie on the object dilated by ``margin``.
    :param margin: pixels added around the object (a square neighbourhood) before ``precision`` is measured,
        so that a slot whose mask is a pixel or two wider than its object still counts.
    :return: ``{category index: (found, total)}`` over the categories that occur.
    """
    from scipy.ndimage import binary_dilation

    true, pred = _to_numpy(true_clips), _to_numpy(pred_clips)
    if pred.ndim == true.ndim + 1:
        pred = pred.argmax(axis=-3)
    if true.ndim == 3:
        true, pred = true[None], pred[None]
    if true.ndim != 4 or true.shape != pred.shape:
        raise ValueError(f"expected (B, T, H, W) labels and predictions of one shape, got {true.shape} and {pred.shape}")
    true, pred = true.astype(np.int64), pred.astype(np.int64)
    cats = _to_numpy(categories).astype(np.int64)
    if cats.ndim == 1:
        cats = np.broadcast_to(cats, (true.shape[0], true.shape[1], cats.shape[0]))
    elif cats.ndim == 2:
        cats = np.broadcast_to(cats[:, None], (true.shape[0], true.shape[1], cats.shape[1]))
    if cats.shape[:2] != true.shape[:2]:
        raise ValueError(f"categories {cats.shape} must be (L,), (B, L) or (B, T, L) for labels {true.shape}")
    structure = np.ones((2 * margin + 1, 2 * margin + 1), dtype=bool)
    counts: dict[int, list[int]] = {}
    for b, background_slot in enumerate(background_slots(true, pred)):
        for t in range(true.shape[1]):
            frame, segments = true[b, t], pred[b, t]
            for label in np.unique(frame):
                if label <= 0 or label >= cats.shape[2] or cats[b, t, label] < 0:
                    continue
                inside = frame == label
                tally = counts.setdefault(int(cats[b, t, label]), [0, 0])
                tally[1] += 1
                near = binary_dilation(inside, structure) if margin > 0 else inside
                area = inside.sum()
                for segment in np.unique(segments[inside]):
                    if segment == background_slot:
                        continue
                    own = segments == segment
                    if (own & inside).sum() >= coverage * area and (own & near).sum() >= precision * own.sum():
                        tally[0] += 1
                        break
    return {category: (found, total) for category, (found, total) in sorted(counts.items())}


def object_recall(
    true_clips: ArrayLike,
    pred_clips: ArrayLike,
    categories: ArrayLike,
    names: list[str] | tuple[str, ...],
    coverage: float = RECALL_COVERAGE,
    precision: float = RECALL_PRECISION,
    margin: int = RECALL_MARGIN,
) -> dict[str, float]:
    """Per-category object recall: the fraction of object-frames some slot finds.

    Each object in each frame counts once. It is *found* when a predicted segment (the argmax over slots)
    other than the clip's background slot (:func:`background_slots`: the segment holding the most
    ground-truth background pixels of the clip) covers at least ``coverage`` of the object's pixels *and*
    has at least ``precision`` of its own pixels in that frame on the object dilated by ``margin`` pixels.
    The first condition alone is met by chance (one big slot over everything covers every object); the
    second demands that the slot be about that object.

    :param true_clips: int ``(B, T, H, W)`` instance labels, 0 = background.
    :param pred_clips: int segment ids shaped like ``true_clips``, or soft masks ``(B, T, N, H, W)``.
    :param categories: category index per label, see :func:`object_recall_counts`.
    :param names: the name of each category index.
    :param coverage: see :func:`object_recall_counts`.
    :param precision: see :func:`object_recall_counts`.
    :param margin: see :func:`object_recall_counts`.
    :return: ``{category name: recall}`` for the categories that occur.
    """
    counts = object_recall_counts(true_clips, pred_clips, categories, coverage, precision, margin)
    return {names[category]: found / total for category, (found, total) in counts.items()}

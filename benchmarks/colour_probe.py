"""Does a trained encoder bind colour? Probes of the frame tokens and of the decoded slot colours.

    python benchmarks/colour_probe.py --checkpoint runs/psb/psb.ckpt

1. Token probe: one 5×5 square of each palette colour on black, at the same place. Prints the distance
   between the frame tokens under the square for every pair of colours, next to the distance between
   the tokens of one colour moved by one token diagonally (what the encoder must also tell apart).
2. Slot probe: on held-out clips, for each ground-truth object at the last frame, the slot with the
   largest alpha there, its alpha, and that slot's decoded RGB next to the input colour. A colour-blind
   model decodes every object in the same grey.

Writes JSON with both tables.
"""

from __future__ import annotations

import sys
from dataclasses import dataclass

import numpy as np
import torch

from envs.sprites import COLOR_NAMES, PALETTE
from psb_rl.checkpoint import load_checkpoint
from psb_rl.cli import parse_dataclass
from psb_rl.data import RolloutDataset
from psb_rl.evaluation import sample_eval_clips
from psb_rl.preprocessing import preprocess_frames, resize_masks
from psb_rl.training import held_out_episodes
from psb_rl.utils import write_json


@dataclass
class ColourProbeArgs:
    checkpoint: str = "runs/psb/psb.ckpt"
    """PSB checkpoint to probe"""
    data: str = "data/random_objects"
    """rollouts with masks (the training data: its held-out split is used)"""
    clips: int = 4
    """held-out clips for the slot probe"""
    out: str = "benchmarks/results/colour_probe.json"
    """JSON output"""


def square_frame(colour: np.ndarray, size: int, top: int) -> torch.Tensor:
    """A ``(1, 1, 3, size, size)`` one-frame video of a 5×5 square of ``colour`` (RGB in [0, 1]) on black."""
    video = torch.zeros(1, 1, 3, size, size)
    video[..., top : top + 5, top : top + 5] = torch.as_tensor(colour, dtype=torch.float32)[:, None, None]
    return video


@torch.no_grad()
def token_probe(model: torch.nn.Module) -> dict:
    """Distances between the tokens under a square of each colour, and under a shifted square."""
    cfg = model.config
    top = cfg.image_size // 2 - 2
    cell = (top + 2) // cfg.feature_stride  # grid row and column of the square's centre
    token = cell * cfg.feature_size + cell
    colours = np.asarray(PALETTE, dtype=np.float32) / 255.0
    tokens = torch.stack([model.encode_frames(square_frame(c, cfg.image_size, top))[0, 0, token]
                          for c in colours])
    distances = torch.cdist(tokens, tokens)
    shifted_top = top + cfg.feature_stride
    shifted_token = token + cfg.feature_size + 1
    shifted = model.encode_frames(square_frame(colours[0], cfg.image_size, shifted_top))[0, 0, shifted_token]
    return {"colours": list(COLOR_NAMES), "token_distances": distances.tolist(),
            "mean_colour_distance": float(distances[~torch.eye(len(colours), dtype=torch.bool)].mean()),
            "shift_distance": float((tokens[0] - shifted).norm()), "token_norm": float(tokens.norm(dim=1).mean())}


@torch.no_grad()
def slot_probe(model: torch.nn.Module, data: str, clips: int) -> list[dict]:
    """Per ground-truth object: input colour vs the decoded colour of its slot."""
    size = model.config.image_size
    episodes = held_out_episodes(RolloutDataset(data, clip_len=6, split="val", verify=False))
    frames, masks = sample_eval_clips(episodes, 6, clips)
    if masks is None:
        raise SystemExit(f"{data} has no ground-truth masks: collect rollouts with masks for the slot probe")
    video = preprocess_frames(frames, size)
    out = model(video)
    true = resize_masks(masks, size)
    rows = []
    for c in range(len(frames)):
        for label in np.unique(true[c, -1])[1:]:
            ys, xs = np.nonzero(true[c, -1] == label)
            alpha = out.masks[c, -1][:, ys, xs].mean(-1)
            slot = int(alpha.argmax())
            rows.append({"clip": c, "object": int(label), "slot": slot, "alpha": float(alpha[slot]),
                         "input_rgb": video[c, -1][:, ys, xs].mean(-1).tolist(),
                         "slot_rgb": out.per_slot_rgb[c, -1, slot][:, ys, xs].mean(-1).tolist()})
    return rows


def main(argv: list[str] | None = None) -> int:
    args = parse_dataclass(ColourProbeArgs, argv, description=__doc__)
    model = load_checkpoint(args.checkpoint).eval()
    tokens = token_probe(model)
    print(f"token norm {tokens['token_norm']:.2f}; mean distance between colours {tokens['mean_colour_distance']:.2f}; "
          f"same colour shifted by one token {tokens['shift_distance']:.2f}")
    rows = slot_probe(model, args.data, args.clips)
    print(f"{'clip':>4} {'obj':>3} {'slot':>4} {'alpha':>5}  input RGB           slot RGB")
    for row in rows:
        rgb_in = " ".join(f"{v:.2f}" for v in row["input_rgb"])
        rgb_slot = " ".join(f"{v:.2f}" for v in row["slot_rgb"])
        print(f"{row['clip']:>4} {row['object']:>3} {row['slot']:>4} {row['alpha']:>5.2f}  {rgb_in:<18}  {rgb_slot}")
    inputs = np.array([r["input_rgb"] for r in rows])
    decoded = np.array([r["slot_rgb"] for r in rows])
    # Chroma = colour minus its grey level; a colour-blind decoder has ~0 chroma correlation.
    chroma_in = inputs - inputs.mean(1, keepdims=True)
    chroma_out = decoded - decoded.mean(1, keepdims=True)
    chroma_corr = float(np.corrcoef(chroma_in.ravel(), chroma_out.ravel())[0, 1])
    print(f"correlation of input and decoded chroma over {len(rows)} objects: {chroma_corr:.2f}")
    write_json(args.out, {"benchmark": "colour_probe", "args": vars(args), "tokens": tokens, "objects": rows,
                          "chroma_correlation": chroma_corr})
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

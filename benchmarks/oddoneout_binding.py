"""Does the odd object of ``PSB/OddOneOut-v0`` get a slot of its own? Purity by colour pair.

    python benchmarks/oddoneout_binding.py --checkpoint runs/psb_odd_centre/psb.ckpt \
        --failures runs/s7/slots_centre_mlp_s0/failures.json

Streams random-play episodes through the checkpoint (``StreamingEncoder``, as the agents see them),
segments frames 1..3 of each episode (argmax of the decoded masks, at the model's resolution) and
takes the slot that holds most of the odd object. Its *purity* is the odd object's share of that
slot's object pixels (1 = a slot of its own; 0.5 = shared half and half with other objects). Reports
the mean, the share of frames below 0.5 and the mean per pair of colours (common, odd; unordered).
With ``--failures`` (JSON of ``benchmarks/oddoneout_failures.py`` for an agent on the same encoder)
it also correlates the per-pair purity with the agent's per-pair failure rate. Prints and writes JSON.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

import gymnasium as gym  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

import envs  # noqa: E402, F401  (registers PSB/ ids)
from envs.scripted import colour_pair  # noqa: E402
from psb_rl import StreamingEncoder, load_checkpoint  # noqa: E402
from psb_rl.cli import parse_dataclass  # noqa: E402
from psb_rl.preprocessing import resize_masks  # noqa: E402
from psb_rl.utils import write_json  # noqa: E402


@dataclass
class Args:
    """Slot purity of OddOneOut's odd object, per colour pair."""

    checkpoint: str = "runs/psb_odd_centre/psb.ckpt"
    """PSB checkpoint to stream"""
    episodes: int = 300
    """random-play episodes (reset seeds seed .. seed + episodes - 1)"""
    frames: int = 3
    """frames scored per episode (1 .. frames; frame 0 has no history)"""
    seed: int = 0
    """first reset seed; also seeds the random actions"""
    failures: str | None = None
    """optional failures.json of benchmarks/oddoneout_failures.py to correlate with"""
    torch_threads: int = 2
    """torch CPU threads"""
    out: str | None = None
    """where the JSON goes (default: oddoneout_binding.json beside the checkpoint)"""


def odd_object_purity(segments: np.ndarray, labels: np.ndarray, odd_label: int) -> float | None:
    """The odd object's share of the object pixels of its majority segment.

    :param segments: int ``(H, W)`` predicted segment ids.
    :param labels: int ``(H, W)`` ground truth, 0 = background.
    :param odd_label: the odd object's label in ``labels``.
    :return: purity in (0, 1], or None if the odd object is not visible.
    """
    odd = labels == odd_label
    if not odd.any():
        return None
    majority = np.bincount(segments[odd]).argmax()
    mine = segments == majority
    return float((mine & odd).sum() / (mine & (labels > 0)).sum())


def main(argv: list[str] | None = None) -> dict[str, object]:
    """Stream, score, print and write. :return: the summary."""
    args: Args = parse_dataclass(Args, argv)
    torch.set_num_threads(args.torch_threads)
    model = load_checkpoint(args.checkpoint, device="cpu").eval()
    size = model.config.image_size
    env = gym.make("PSB/OddOneOut-v0", return_masks=True)
    core = env.unwrapped
    rng = np.random.default_rng(args.seed)
    by_pair: dict[str, list[float]] = defaultdict(list)
    for episode in range(args.episodes):
        obs, info = env.reset(seed=args.seed + episode)
        encoder = StreamingEncoder(model, num_envs=1)
        pair = colour_pair(core) or "one colour"  # the default OddOneOut always has two
        for t in range(args.frames + 1):
            slots = encoder.step(obs[None])
            if t >= 1:
                with torch.inference_mode():
                    _, masks, _ = model.decode(slots[:, None])  # (1, 1, N, S, S)
                purity = odd_object_purity(masks[0, 0].argmax(0).numpy(), resize_masks(info["masks"], size),
                                           core.odd_index + 1)
                if purity is not None:
                    by_pair[pair].append(purity)
            obs, _, terminated, truncated, info = env.step(int(rng.integers(1, 5)))
            if terminated or truncated:
                break
    env.close()
    every = np.concatenate([np.asarray(v) for v in by_pair.values()])
    pairs = {k: {"purity": float(np.mean(v)), "frames": len(v)} for k, v in sorted(by_pair.items())}
    summary: dict[str, object] = {
        "benchmark": "oddoneout_binding", "checkpoint": args.checkpoint, "episodes": args.episodes,
        "mean_purity": float(every.mean()), "share_below_half": float((every < 0.5).mean()), "colour_pairs": pairs,
    }
    print(f"{args.checkpoint}: odd object's purity {every.mean():.3f} over {len(every)} frames, "
          f"below 0.5 in {(every < 0.5).mean():.3f}")
    ranked = sorted(pairs.items(), key=lambda kv: kv[1]["purity"])
    print("  lowest pairs: " + ", ".join(f"{k} {v['purity']:.2f}" for k, v in ranked[:5]))
    print("  highest pairs: " + ", ".join(f"{k} {v['purity']:.2f}" for k, v in ranked[-3:]))
    if args.failures:
        rows = json.loads(Path(args.failures).read_text())["colour_pairs"]
        shared = [(pairs[r["colours"]]["purity"], r["failure_rate"]) for r in rows if r["colours"] in pairs]
        if len(shared) >= 3:
            purity, failure = np.array(shared).T
            low = purity < np.median(purity)
            summary["failures"] = {
                "file": args.failures, "pairs": len(shared),
                "correlation": float(np.corrcoef(purity, failure)[0, 1]),
                "failure_rate_low_purity_pairs": float(failure[low].mean()),
                "failure_rate_other_pairs": float(failure[~low].mean()),
            }
            print(f"  vs {args.failures}: correlation of purity and failure rate over {len(shared)} pairs "
                  f"{summary['failures']['correlation']:.2f}; failure rate {failure[low].mean():.3f} on pairs "
                  f"below the median purity, {failure[~low].mean():.3f} on the others")
    out = Path(args.out) if args.out else Path(args.checkpoint).with_name("oddoneout_binding.json")
    write_json(out, summary)
    print(f"wrote {out}")
    return summary


if __name__ == "__main__":
    main()

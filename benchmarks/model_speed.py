"""Parameter count and forward+backward time of a PSB config on this machine.

    python benchmarks/model_speed.py                         # default PSBConfig, B=16, T=8
    python benchmarks/model_speed.py --image-size 64         # the same config at 64×64 input

Prints the median of --repeats timed steps (after --warmup) and writes JSON.
"""

from __future__ import annotations

import platform
import statistics
import sys
import time
from dataclasses import dataclass

import torch

from psb_rl.cli import parse_dataclass
from psb_rl.config import PSBConfig
from psb_rl.model import PSBAutoencoder
from psb_rl.utils import resolve_device, write_json


@dataclass
class ModelSpeedArgs:
    batch_size: int = 16
    """clips per step"""
    clip_len: int = 8
    """frames per clip"""
    image_size: int | None = None
    """input resolution (default: the config's)"""
    repeats: int = 7
    """timed steps (median reported)"""
    warmup: int = 2
    """untimed steps first"""
    encoder: str = "psb"
    """psb | savi"""
    device: str = "auto"
    """auto | cpu | cuda"""
    out: str = "benchmarks/results/model_speed.json"
    """JSON output"""


def main(argv: list[str] | None = None) -> int:
    args = parse_dataclass(ModelSpeedArgs, argv, description=__doc__)
    device = resolve_device(args.device)
    overrides = {"encoder": args.encoder}
    if args.image_size is not None:
        overrides["image_size"] = args.image_size
    config = PSBConfig(**overrides)
    torch.manual_seed(0)
    model = PSBAutoencoder(config).to(device)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    video = torch.rand(args.batch_size, args.clip_len, 3, config.image_size, config.image_size, device=device)
    times = []
    for index in range(args.warmup + args.repeats):
        if device.type == "cuda":
            torch.cuda.synchronize()
        start = time.perf_counter()
        loss = model(video).loss
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()
        if index >= args.warmup:
            times.append(time.perf_counter() - start)
    params = sum(p.numel() for p in model.parameters())
    result = {
        "config": config.to_dict(), "parameters": params,
        "slot_module_parameters": sum(p.numel() for p in model.slot_encoder.parameters()),
        "batch_size": args.batch_size, "clip_len": args.clip_len, "median_step_s": statistics.median(times),
        "step_times_s": times, "device": str(device), "threads": torch.get_num_threads(),
        "torch": torch.__version__, "platform": platform.platform(),
    }
    print(f"{args.encoder} {config.image_size}x{config.image_size}, B={args.batch_size}, T={args.clip_len}: "
          f"{params:,} parameters, forward+backward+AdamW median {result['median_step_s'] * 1000:.0f} ms "
          f"over {args.repeats} steps ({device}, {torch.get_num_threads()} threads)")
    write_json(args.out, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())

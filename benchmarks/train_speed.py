"""Training-step time of PSB vs the SAVi baseline, per clip length T (same batch, resolution, config).

    python benchmarks/train_speed.py [--ts 6 12 24 48] [--batch-size 8] [--repeats 5] [--quick]

For every T both models (same ``PSBConfig`` except ``encoder``; SAVi is parameter-matched) are timed:

- *slot module*: forward + backward of ``model.slot_encoder`` on precomputed, detached frame features
  (``requires_grad``), loss ``slots.square().mean()``: PSB's parallel blocks vs SAVi's T recurrent steps;
- *whole step*: ``model(video).loss.backward()`` + AdamW step (frame encoder and decoder included).

Each closure's matmul and convolution FLOPs (forward + backward, ``torch.utils.flop_counter``) are
counted once: unlike times they do not depend on the machine or its load, and where a device runs
out of parallel work (a 2-core CPU) their ratio bounds the speed-up.

After warm-up, PSB and SAVi alternate (A/B, B/A, ...) for ``--repeats`` rounds and medians are reported.
Peak memory of one whole training step is measured per (encoder, T) in a fresh subprocess: peak RSS
(``VmHWM``; ``ru_maxrss`` would be inherited from the parent across exec) on CPU, ``torch.cuda.max_memory_allocated`` on CUDA. Prints a table with the
ratio SAVi / PSB and writes JSON (atomically) to ``benchmarks/results/train_speed.json``.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from psb_rl.config import PSBConfig
from psb_rl.model import PSBAutoencoder
from psb_rl.utils import child_pythonpath, resolve_device, write_json

ROOT = Path(__file__).resolve().parents[1]

ENCODERS = ("psb", "savi")


@dataclass
class Args:
    """Time a training step of PSB and of the SAVi baseline for several clip lengths T."""

    ts: list[int] = field(default_factory=lambda: [6, 12, 24])
    """clip lengths T to time (e.g. --ts 6 12 24 48)"""
    batch_size: int = 8
    """clips per batch"""
    image_size: int = 64
    """square frame resolution"""
    num_slots: int = 7
    """PSBConfig.num_slots"""
    slot_dim: int = 128
    """PSBConfig.slot_dim"""
    num_blocks: int = 3
    """PSBConfig.num_blocks (SAVi: predictor layers)"""
    window: int | None = 8
    """PSBConfig.window"""
    repeats: int = 5
    """alternating PSB/SAVi rounds per T (medians are reported)"""
    warmup: int = 2
    """untimed steps per model and T before timing"""
    device: str = "auto"
    """auto, cpu or cuda"""
    bf16: bool = False
    """CUDA only: autocast the forward passes to bfloat16"""
    memory: bool = True
    """measure peak memory of a whole step per (encoder, T) in a fresh subprocess"""
    torch_threads: int | None = 1
    """torch CPU threads (None: torch's default). 1 by default: on a shared, loaded CPU, 2+ threads
    were measured 10-100x slower (spinning OpenMP workers)"""
    quick: bool = False
    """smoke run: T = 6, 12, 3 repeats, batch 4, 1 warm-up step"""
    seed: int = 0
    """seed of the weights and the random videos"""
    out: str = "benchmarks/results/train_speed.json"
    """where the JSON results go"""
    probe: str | None = None
    """internal: 'ENCODER:T' runs one memory probe and prints JSON"""


def make_config(args: Args, encoder: str) -> PSBConfig:
    """The benchmark's model config for ``encoder`` (``"psb"`` or ``"savi"``)."""
    return PSBConfig(image_size=args.image_size, num_slots=args.num_slots, slot_dim=args.slot_dim,
                     num_blocks=args.num_blocks, window=args.window, encoder=encoder)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def autocast(args: Args, device: torch.device) -> contextlib.AbstractContextManager:
    if args.bf16 and device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return contextlib.nullcontext()


def build(args: Args, encoder: str, t: int, device: torch.device) -> dict[str, Callable[[], None]]:
    """Model, data and the two timed closures (``slot``, ``step``) for one encoder and clip length.

    :return: ``{"slot": fn, "step": fn}``; each runs one forward + backward (the step also the optimizer).
    """
    torch.manual_seed(args.seed)
    model = PSBAutoencoder(make_config(args, encoder)).to(device).train()
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4)
    generator = torch.Generator().manual_seed(args.seed + t)
    video = torch.rand(args.batch_size, t, 3, args.image_size, args.image_size, generator=generator).to(device)
    with torch.no_grad(), autocast(args, device):
        features = model.encode_frames(video).float()
    features.requires_grad_(True)

    def slot() -> None:
        with autocast(args, device):
            slots, _ = model.slot_encoder(features)
        slots.float().square().mean().backward()
        model.zero_grad(set_to_none=True)
        features.grad = None

    def step() -> None:
        with autocast(args, device):
            loss = model(video).loss
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return {"slot": slot, "step": step}


def count_flops(fn: Callable[[], None]) -> int:
    """Matmul and convolution FLOPs of one call of ``fn`` (forward and backward)."""
    from torch.utils.flop_counter import FlopCounterMode

    with FlopCounterMode(display=False) as counter:
        fn()
    return counter.get_total_flops()


def timed(fn: Callable[[], None], device: torch.device) -> float:
    """Seconds of one call of ``fn`` (CUDA-synchronised)."""
    synchronize(device)
    start = time.perf_counter()
    fn()
    synchronize(device)
    return time.perf_counter() - start


def rss_mb(key: str = "VmHWM") -> float:
    """Peak (``VmHWM``) or current (``VmRSS``) resident memory of this process in MiB.

    Reads ``/proc/self/status`` on Linux: unlike ``ru_maxrss``, ``VmHWM`` is not inherited across
    ``fork`` + ``exec`` from the (large) parent. Elsewhere falls back to ``ru_maxrss``.
    """
    with contextlib.suppress(OSError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(key + ":"):
                return int(line.split()[1]) / 1024
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20


def probe_memory(args: Args, device: torch.device) -> dict:
    """Run inside a fresh process: peak memory of two whole training steps of one (encoder, T) config."""
    encoder, t = args.probe.split(":")
    before = rss_mb("VmRSS")
    fns = build(args, encoder, int(t), device)
    built = rss_mb("VmRSS")
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    for _ in range(2):
        fns["step"]()
    synchronize(device)
    result = {"max_rss_mb": rss_mb("VmHWM"), "rss_before_model_mb": before, "rss_after_build_mb": built}
    result["step_peak_over_build_mb"] = result["max_rss_mb"] - built
    if device.type == "cuda":
        result["cuda_peak_mb"] = torch.cuda.max_memory_allocated(device) / 2**20
    return result


def run_probe(args: Args, encoder: str, t: int) -> dict:
    """Peak memory of one (encoder, T) config, measured in a subprocess so peaks do not mix."""
    argv = [sys.executable, str(Path(__file__).resolve()), "--probe", f"{encoder}:{t}",
            "--batch-size", str(args.batch_size), "--image-size", str(args.image_size),
            "--num-slots", str(args.num_slots), "--slot-dim", str(args.slot_dim),
            "--num-blocks", str(args.num_blocks), "--window", str(args.window), "--device", args.device,
            "--seed", str(args.seed), "--bf16" if args.bf16 else "--no-bf16"]
    argv += ["--torch-threads", "none" if args.torch_threads is None else str(args.torch_threads)]
    proc = subprocess.run(argv, capture_output=True, text=True, env={**os.environ, "PYTHONPATH": child_pythonpath(ROOT)})
    if proc.returncode != 0:
        return {"error": proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else f"rc={proc.returncode}"}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine_info(device: torch.device) -> dict:
    info = {"torch": torch.__version__, "device": str(device), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor(),
            "python": platform.python_version()}
    if device.type == "cuda":
        info["gpu"] = torch.cuda.get_device_name(device)
    with contextlib.suppress(OSError):
        info["load_average"] = os.getloadavg()
    return info


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print a table, write the JSON. :return: the results."""
    from psb_rl.cli import parse_dataclass

    args: Args = parse_dataclass(Args, argv)
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    if args.probe:
        print(json.dumps(probe_memory(args, device)))
        return {}
    if args.quick:
        args.ts, args.repeats, args.batch_size, args.warmup = [6, 12], 3, 4, 1

    rows = []
    for t in args.ts:
        try:
            fns = {encoder: build(args, encoder, t, device) for encoder in ENCODERS}
            times: dict[str, dict[str, list[float]]] = {e: {"slot": [], "step": []} for e in ENCODERS}
            flops = {e: {kind: count_flops(fn) for kind, fn in fns[e].items()} for e in ENCODERS}
            for kind in ("slot", "step"):
                for encoder in ENCODERS:
                    for _ in range(args.warmup):
                        fns[encoder][kind]()
                for r in range(args.repeats):
                    for encoder in ENCODERS if r % 2 == 0 else reversed(ENCODERS):
                        times[encoder][kind].append(timed(fns[encoder][kind], device))
        except torch.OutOfMemoryError as error:  # T too long for this device: report and go on
            print(f"T={t}: out of memory ({error}); skipped")
            rows.append({"T": t, "error": "out of memory"})
            break
        del fns
        row: dict = {"T": t}
        for kind in ("slot", "step"):
            for encoder in ENCODERS:
                row[f"{encoder}_{kind}_s"] = statistics.median(times[encoder][kind])
                row[f"{encoder}_{kind}_all_s"] = times[encoder][kind]
            row[f"{kind}_ratio_savi_over_psb"] = row[f"savi_{kind}_s"] / row[f"psb_{kind}_s"]
            for encoder in ENCODERS:
                row[f"{encoder}_{kind}_gflop"] = flops[encoder][kind] / 1e9
            row[f"{kind}_flop_ratio_savi_over_psb"] = flops["savi"][kind] / flops["psb"][kind]
            row[f"{kind}_ratio_paired_median"] = statistics.median(
                s / p for s, p in zip(times["savi"][kind], times["psb"][kind])
            )
        if args.memory:
            for encoder in ENCODERS:
                row[f"{encoder}_memory"] = run_probe(args, encoder, t)
        rows.append(row)
        print(f"T={t}: slot PSB {row['psb_slot_s'] * 1e3:.0f} ms, SAVi {row['savi_slot_s'] * 1e3:.0f} ms; "
              f"step PSB {row['psb_step_s'] * 1e3:.0f} ms, SAVi {row['savi_step_s'] * 1e3:.0f} ms", flush=True)

    params = {e: sum(p.numel() for p in PSBAutoencoder(make_config(args, e)).slot_encoder.parameters())
              for e in ENCODERS}
    info = machine_info(device)
    print(f"\nbatch {args.batch_size}, {args.image_size}px, N={args.num_slots} D={args.slot_dim} "
          f"M={args.num_blocks} W={args.window}, slot-module params PSB {params['psb']:,} / SAVi "
          f"{params['savi']:,}; {device} ({info['torch_threads']} threads), median of {args.repeats}")
    mem_key = "cuda_peak_mb" if device.type == "cuda" else "step_peak_over_build_mb"
    header = (f"| {'T':>3} | {'slot PSB ms':>11} | {'slot SAVi ms':>12} | {'SAVi/PSB':>8} | {'step PSB ms':>11} | "
              f"{'step SAVi ms':>12} | {'SAVi/PSB':>8} | {'mem PSB MB':>10} | {'mem SAVi MB':>11} | "
              f"{'slot GFLOP PSB/SAVi':>19} | {'step GFLOP PSB/SAVi':>19} |")
    print(header)
    print("".join(c if c == "|" else "-" for c in header))
    for row in rows:
        if "error" in row:
            print(f"| {row['T']:>3} | {row['error']}")
            continue
        mem = [row.get(f"{e}_memory", {}).get(mem_key, float("nan")) for e in ENCODERS]
        print(f"| {row['T']:>3} | {row['psb_slot_s'] * 1e3:>11.1f} | {row['savi_slot_s'] * 1e3:>12.1f} | "
              f"{row['slot_ratio_savi_over_psb']:>8.2f} | {row['psb_step_s'] * 1e3:>11.1f} | "
              f"{row['savi_step_s'] * 1e3:>12.1f} | {row['step_ratio_savi_over_psb']:>8.2f} | "
              f"{mem[0]:>10.0f} | {mem[1]:>11.0f} | "
              f"{row['psb_slot_gflop']:>9.2f}/{row['savi_slot_gflop']:<9.2f} | "
              f"{row['psb_step_gflop']:>9.2f}/{row['savi_step_gflop']:<9.2f} |")
    print("memory: " + ("peak CUDA allocation of" if device.type == "cuda" else "peak RSS (VmHWM) during")
          + " two whole training steps in a fresh process, minus its RSS once model and data are built; "
          "GFLOP: matmul and convolution FLOPs of one forward + backward")

    result = {"benchmark": "train_speed", "args": asdict(args), "machine": info, "slot_encoder_params": params,
              "config": {e: make_config(args, e).to_dict() for e in ENCODERS}, "rows": rows}
    write_json(ROOT / args.out if not Path(args.out).is_absolute() else args.out, result)
    print(f"wrote {args.out}")
    return result


if __name__ == "__main__":
    main()

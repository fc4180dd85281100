"""Streaming-encoder cost: constant per step, faster than recomputing the window, frames/s, memory.

    python benchmarks/streaming_speed.py [--checkpoint psb.ckpt] [--quick]

For the default ``PSBConfig()`` (random weights; speed does not depend on them) or ``--checkpoint``:

(a) **constant cost**: one episode (batch 1) is streamed to ``--long-steps`` (10,050; 2,000 with
    ``--quick``). The per-step time at step ~10,000 is compared with a fresh stream at step ~10 by
    alternating single steps of the two streams over a 50-step window (robust to machine-load drift);
    the ratio (goal <= 1.1) and the median per-step time along the long episode are reported.
(b) **streaming vs recompute**: one streaming step vs ``model.encode`` of the last W frames (what an
    agent would do without the cache), batch 1 and 8; goal: speed-up >= W/2.
(c) **throughput**: frames/s of ``StreamingEncoder.step`` at batch 1, 8, 32 (PSB and the SAVi baseline).
(d) **memory**: ``StreamingState.nbytes_per_env()`` (PSB window W, PSB ``window=None``, SAVi).
(e) **unbounded contrast**: a ``window=None`` model pays for its whole cache (``max_cache_len`` steps)
    at every step; its per-step time grows with the episode length it must support.
(f) **long time window**: the same weights with ``time_window = --long-time-window`` (64) against the
    model's own (``time_window = window``, W = 4 by default): streaming steps of the two alternate in
    rounds (batch 1 and 8, ``--repeats`` rounds, medians), goal: ratio <= 1.3. Then one long-window
    stream at step ~10, one at ~1,000 and one at ~10,000 alternate single steps (constant cost), and
    the cache bytes per environment of both are reported. ``--only-time-window`` runs just (f).

Measurements alternate between the compared variants, medians are reported, all under
``torch.inference_mode``. Prints tables and writes JSON (atomically) to
``benchmarks/results/streaming_speed.json``.
"""

from __future__ import annotations

import contextlib
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

from psb_rl.config import PSBConfig
from psb_rl.model import PSBAutoencoder
from psb_rl.streaming import StreamingEncoder
from psb_rl.utils import resolve_device, write_json

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Args:
    """Benchmark the causal streaming encoder: per-step cost over an episode, speed-up over recomputing, cache size."""

    checkpoint: str | None = None
    """PSB checkpoint (default: PSBConfig() with random weights)"""
    long_steps: int = 10_050
    """length of the long episode of (a)"""
    window_steps: int = 50
    """steps per timing window in (a)"""
    recompute_batches: list[int] = field(default_factory=lambda: [1, 8])
    """batch sizes of (b)"""
    throughput_batches: list[int] = field(default_factory=lambda: [1, 8, 32])
    """batch sizes of (c)"""
    steps: int = 20
    """timed steps per round in (b), (c), (e)"""
    repeats: int = 5
    """alternating rounds in (b), (c), (e) (medians are reported)"""
    unbounded_cache_lens: list[int] = field(default_factory=lambda: [64, 256, 1024])
    """max_cache_len values of the window=None contrast (e)"""
    device: str = "cpu"
    """torch device"""
    torch_threads: int | None = 1
    """torch CPU threads (None: torch's default). 1 by default: on a shared, loaded CPU, 2+ threads
    were measured 10-100x slower (spinning OpenMP workers)"""
    long_time_window: int = 64
    """time_window of the long-memory variant in (f)"""
    only_time_window: bool = False
    """run only (f)"""
    quick: bool = False
    """smoke run: 2,000-step episode, 3 repeats, 10 steps per round, (e) with max_cache_len 64 and 256"""
    seed: int = 0
    """seed of the weights and the frames"""
    out: str = "benchmarks/results/streaming_speed.json"
    """where the JSON results go"""


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def per_call(fn: Callable[[], object], calls: int, device: torch.device) -> float:
    """Mean seconds per call of ``fn`` over ``calls`` calls (one timing round)."""
    synchronize(device)
    start = time.perf_counter()
    for _ in range(calls):
        fn()
    synchronize(device)
    return (time.perf_counter() - start) / calls


def alternate(fns: dict[str, Callable[[], float]], repeats: int) -> dict[str, list[float]]:
    """Run each timing round ``fn() -> seconds`` ``repeats`` times, alternating the order every round."""
    names = list(fns)
    out: dict[str, list[float]] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else reversed(names):
            out[name].append(fns[name]())
    return out


def frames_for(model: PSBAutoencoder, batch: int, count: int, seed: int, device: torch.device) -> torch.Tensor:
    """``count`` float frames ``(count, batch, 3, S, S)`` in [0, 1] (already at the model's resolution)."""
    size = model.config.image_size
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, batch, 3, size, size, generator=generator).to(device)


def constant_cost(model: PSBAutoencoder, args: Args, device: torch.device) -> dict:
    """(a): per-step time at step ~10 (fresh stream) vs at the end of a long episode, batch 1."""
    pool = frames_for(model, 1, 64, args.seed, device)
    long_stream, fresh = StreamingEncoder(model, 1), StreamingEncoder(model, 1)
    w = args.window_steps
    timeline = []
    block = 500
    start = time.perf_counter()
    for t in range(args.long_steps - w):
        long_stream.step(pool[t % len(pool)])
        if (t + 1) % block == 0:
            timeline.append({"steps": t + 1, "mean_ms_per_step": (time.perf_counter() - start) / block * 1e3})
            start = time.perf_counter()
    late, early = [], []
    for i in range(10 + w):  # alternate single steps: fresh stream at steps 0..w+9, long stream at the end
        frame = pool[i % len(pool)]
        for name in ("fresh", "long") if i % 2 == 0 else ("long", "fresh"):
            stream = fresh if name == "fresh" else long_stream
            seconds = per_call(lambda s=stream, f=frame: s.step(f), 1, device)
            if name == "fresh" and i >= 10:
                early.append(seconds)
            if name == "long" and i < w:
                late.append(seconds)
    early_ms, late_ms = statistics.median(early) * 1e3, statistics.median(late) * 1e3
    return {"early_steps": [10, 10 + w], "late_steps": [args.long_steps - w, args.long_steps],
            "early_ms": early_ms, "late_ms": late_ms, "ratio_late_over_early": late_ms / early_ms,
            "goal": 1.1, "passed": late_ms / early_ms <= 1.1, "timeline": timeline,
            "final_step_count": int(long_stream.state.step_count[0]),
            "nbytes_per_env_at_end": long_stream.state.nbytes_per_env()}


def recompute_speedup(model: PSBAutoencoder, args: Args, batch: int, device: torch.device) -> dict:
    """(b): one streaming step vs ``model.encode`` of the last W frames, per step."""
    window = model.config.window or 8
    pool = frames_for(model, batch, window + args.steps, args.seed + batch, device)
    stream = StreamingEncoder(model, batch)
    for t in range(window):  # stream inside its steady state: the ring buffer is full
        stream.step(pool[t])
    clip = pool[:window].transpose(0, 1).contiguous()  # (batch, W, 3, S, S)
    counter = {"t": 0}

    def streaming() -> float:
        def one() -> None:
            stream.step(pool[window + counter["t"] % args.steps])
            counter["t"] += 1

        return per_call(one, args.steps, device)

    def recompute() -> float:
        return per_call(lambda: model.encode(clip), args.steps, device)

    times = alternate({"streaming": streaming, "recompute": recompute}, args.repeats)
    s, r = statistics.median(times["streaming"]), statistics.median(times["recompute"])
    return {"batch": batch, "window": window, "streaming_ms": s * 1e3, "recompute_ms": r * 1e3, "speedup": r / s,
            "goal": window / 2, "passed": r / s >= window / 2, "all_s": times}


def throughput(models: dict[str, PSBAutoencoder], args: Args, device: torch.device) -> list[dict]:
    """(c): frames/s of streaming steps at each batch size, per model, alternating."""
    fns = {}
    for name, model in models.items():
        for batch in args.throughput_batches:
            pool = frames_for(model, batch, 8, args.seed + batch, device)
            stream = StreamingEncoder(model, batch)
            for t in range(12):
                stream.step(pool[t % 8])
            fns[(name, batch)] = (
                lambda s=stream, p=pool: per_call(lambda: s.step(p[int(s.state.step_count[0]) % 8]), args.steps,
                                                  device)
            )
    times = alternate(fns, args.repeats)
    rows = []
    for (name, batch), values in times.items():
        median = statistics.median(values)
        rows.append({"encoder": name, "batch": batch, "ms_per_step": median * 1e3, "frames_per_s": batch / median})
    return rows


def unbounded(args: Args, base: PSBConfig, device: torch.device) -> list[dict]:
    """(e): ``window=None`` models: per-step time at step ~10 and near ``max_cache_len``, per cache length."""
    rows = []
    for cache_len in args.unbounded_cache_lens:
        cfg = PSBConfig(**{**base.to_dict(), "window": None, "max_cache_len": cache_len, "encoder": "psb"})
        torch.manual_seed(args.seed)
        model = PSBAutoencoder(cfg).to(device).eval()
        pool = frames_for(model, 1, 16, args.seed, device)
        stream = StreamingEncoder(model, 1)
        early, late = [], []
        n = min(args.steps, cache_len // 4)
        for t in range(cache_len):
            seconds = per_call(lambda s=stream, f=pool[t % 16]: s.step(f), 1, device)
            if 10 <= t < 10 + n:
                early.append(seconds)
            if t >= cache_len - n:
                late.append(seconds)
        rows.append({"max_cache_len": cache_len, "early_ms": statistics.median(early) * 1e3,
                     "late_ms": statistics.median(late) * 1e3, "nbytes_per_env": stream.state.nbytes_per_env()})
        del stream, model
    return rows


def with_time_window(model: PSBAutoencoder, time_window: int | None, device: torch.device) -> PSBAutoencoder:
    """A copy of ``model`` (same weights) whose time-axis attention reaches ``time_window`` steps."""
    cfg = PSBConfig(**{**model.config.to_dict(), "time_window": time_window})
    other = PSBAutoencoder(cfg).to(device).eval()
    other.load_state_dict(model.state_dict())
    return other


def time_window_cost(model: PSBAutoencoder, args: Args, device: torch.device) -> dict:
    """(f): a streaming step with a long time window vs the model's own, and its cost along an episode."""
    short = with_time_window(model, model.config.time_window, device)
    long = with_time_window(model, args.long_time_window, device)
    warm = 2 * args.long_time_window  # both ring buffers full
    rows = []
    for batch in args.recompute_batches:
        pool = frames_for(model, batch, 16, args.seed + batch, device)
        streams = {"short": StreamingEncoder(short, batch), "long": StreamingEncoder(long, batch)}
        for stream in streams.values():
            for t in range(warm):
                stream.step(pool[t % 16])
        fns = {name: (lambda s=stream, p=pool: per_call(lambda: s.step(p[int(s.state.step_count[0]) % 16]),
                                                          args.steps, device))
               for name, stream in streams.items()}
        times = alternate(fns, args.repeats)
        s, lg = statistics.median(times["short"]), statistics.median(times["long"])
        rows.append({"batch": batch, "short_ms": s * 1e3, "long_ms": lg * 1e3, "ratio_long_over_short": lg / s,
                     "all_s": times})

    # Constant cost: three streams of the long-window model at steps ~10, ~1,000 and ~10,000, stepped in
    # alternation so that machine-load drift hits them alike.
    pool = frames_for(model, 1, 64, args.seed, device)
    late = args.long_steps - args.window_steps
    targets = {"early": 10, "middle": min(1_000, late // 2), "late": late}
    streams = {name: StreamingEncoder(long, 1) for name in targets}
    for name, start in targets.items():
        for t in range(start):
            streams[name].step(pool[t % len(pool)])
    per_step: dict[str, list[float]] = {name: [] for name in targets}
    names = list(targets)
    for i in range(args.window_steps):
        frame = pool[i % len(pool)]
        for name in names if i % 2 == 0 else reversed(names):
            per_step[name].append(per_call(lambda s=streams[name], f=frame: s.step(f), 1, device))
    along = {name: {"steps": [targets[name], targets[name] + args.window_steps],
                    "median_ms": statistics.median(values) * 1e3} for name, values in per_step.items()}
    late_over_early = along["late"]["median_ms"] / along["early"]["median_ms"]
    return {"window": model.config.window, "short_time_window": short.config.time_window,
            "long_time_window": args.long_time_window, "ab": rows, "goal_ratio": 1.3,
            "passed_ratio": all(r["ratio_long_over_short"] <= 1.3 for r in rows),
            "along_episode": along, "ratio_late_over_early": late_over_early, "passed_constant": late_over_early <= 1.1,
            "final_step_count": int(streams["late"].state.step_count[0]),
            "nbytes_per_env": {"short": streams_bytes(short), "long": streams_bytes(long)}}


def streams_bytes(model: PSBAutoencoder) -> int:
    """Cache bytes per environment of ``model``'s streaming state."""
    return StreamingEncoder(model, 4).state.nbytes_per_env()


def print_time_window(f: dict) -> None:
    print(f"\n(f) time window {f['long_time_window']} vs {f['short_time_window']} (bottom-up W={f['window']}), "
          f"alternating rounds (goal <= {f['goal_ratio']}x)")
    print(f"| {'batch':>5} | {'Wt=' + str(f['short_time_window']) + ' ms':>10} | "
          f"{'Wt=' + str(f['long_time_window']) + ' ms':>11} | {'ratio':>6} |")
    print(f"|{'-' * 7}|{'-' * 12}|{'-' * 13}|{'-' * 8}|")
    for row in f["ab"]:
        print(f"| {row['batch']:>5} | {row['short_ms']:>10.2f} | {row['long_ms']:>11.2f} | "
              f"{row['ratio_long_over_short']:>5.2f}x |")
    along = ", ".join(f"steps {v['steps'][0]}-{v['steps'][1]}: {v['median_ms']:.2f} ms" for v in f["along_episode"].values())
    print(f"    Wt={f['long_time_window']} along one episode (batch 1): {along}; ratio "
          f"{f['ratio_late_over_early']:.3f} ({'PASS' if f['passed_constant'] else 'FAIL'} <= 1.1)")
    print("    cache per env: " + ", ".join(f"Wt={f[k + '_time_window']}: {v:,} bytes ({v / 2**20:.2f} MiB)"
                                          for k, v in f["nbytes_per_env"].items()))


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark, print tables, write the JSON. :return: the results."""
    from psb_rl.cli import parse_dataclass

    args: Args = parse_dataclass(Args, argv)
    if args.quick:
        args.long_steps, args.repeats, args.steps, args.unbounded_cache_lens = 2_000, 3, 10, [64, 256]
    if args.torch_threads:
        torch.set_num_threads(args.torch_threads)
    device = resolve_device(args.device)
    torch.manual_seed(args.seed)
    if args.checkpoint:
        from psb_rl import load_checkpoint

        model = load_checkpoint(args.checkpoint, device=device)
    else:
        model = PSBAutoencoder(PSBConfig()).to(device)
    model.eval()
    cfg = model.config
    torch.manual_seed(args.seed)
    savi = PSBAutoencoder(PSBConfig(**{**cfg.to_dict(), "encoder": "savi"})).to(device).eval()
    result: dict = {"benchmark": "streaming_speed", "args": asdict(args), "config": cfg.to_dict()}
    info = {"torch": torch.__version__, "device": str(device), "torch_threads": torch.get_num_threads(),
            "cpu_count": os.cpu_count(), "platform": platform.platform(), "processor": platform.processor()}
    with contextlib.suppress(OSError):
        info["load_average_start"] = os.getloadavg()
    result["machine"] = info
    print(f"PSB N={cfg.num_slots} D={cfg.slot_dim} M={cfg.num_blocks} W={cfg.window} Wt={cfg.time_window} "
          f"{cfg.image_size}px L={cfg.num_tokens} on {device} ({torch.get_num_threads()} threads)", flush=True)
    if args.only_time_window:
        with torch.inference_mode():
            result["f_time_window"] = time_window_cost(model, args, device)
        print_time_window(result["f_time_window"])
        return save_result(result, info, args.out)

    with torch.inference_mode():
        a = constant_cost(model, args, device)
        print(f"\n(a) constant cost, batch 1: step ~10: {a['early_ms']:.2f} ms, step ~{args.long_steps - 25}: "
              f"{a['late_ms']:.2f} ms, ratio {a['ratio_late_over_early']:.3f} (goal <= 1.1: "
              f"{'PASS' if a['passed'] else 'FAIL'})", flush=True)
        timeline = a["timeline"]
        if timeline:
            print("    mean ms/step per 500 steps: " + ", ".join(f"{x['mean_ms_per_step']:.2f}" for x in timeline))
        b = [recompute_speedup(model, args, batch, device) for batch in args.recompute_batches]
        print(f"\n(b) streaming step vs model.encode of the last W={b[0]['window']} frames (goal >= W/2 = "
              f"{b[0]['goal']:.0f}x)")
        print(f"| {'batch':>5} | {'streaming ms':>12} | {'recompute ms':>12} | {'speed-up':>8} |")
        print(f"|{'-' * 7}|{'-' * 14}|{'-' * 14}|{'-' * 10}|")
        for row in b:
            print(f"| {row['batch']:>5} | {row['streaming_ms']:>12.2f} | {row['recompute_ms']:>12.2f} | "
                  f"{row['speedup']:>7.1f}x |")
        c = throughput({"psb": model, "savi": savi}, args, device)
        print("\n(c) streaming throughput")
        print(f"| {'encoder':>7} | {'batch':>5} | {'ms/step':>8} | {'frames/s':>9} |")
        print(f"|{'-' * 9}|{'-' * 7}|{'-' * 10}|{'-' * 11}|")
        for row in c:
            print(f"| {row['encoder']:>7} | {row['batch']:>5} | {row['ms_per_step']:>8.2f} | "
                  f"{row['frames_per_s']:>9.1f} |")
        d = {"psb": StreamingEncoder(model, 4).state.nbytes_per_env(),
             "savi": StreamingEncoder(savi, 4).state.nbytes_per_env()}
        e = unbounded(args, cfg, device)
        f = time_window_cost(model, args, device)
    for row in e:
        d[f"psb_window_none_max_cache_len_{row['max_cache_len']}"] = row["nbytes_per_env"]
    print("\n(d) streaming state per environment")
    for name, nbytes in d.items():
        print(f"    {name}: {nbytes / 2**20:.3f} MiB ({nbytes:,} bytes)")
    print("\n(e) window=None: the cache (and the cost of a step) grows with the episode, up to max_cache_len")
    print(f"| {'max_cache_len':>13} | {'step ~10 ms':>11} | {'last steps ms':>13} | {'MiB/env':>8} |")
    print(f"|{'-' * 15}|{'-' * 13}|{'-' * 15}|{'-' * 10}|")
    for row in e:
        print(f"| {row['max_cache_len']:>13} | {row['early_ms']:>11.2f} | {row['late_ms']:>13.2f} | "
              f"{row['nbytes_per_env'] / 2**20:>8.1f} |")
    print(f"    windowed (W={cfg.window}) for comparison: {a['early_ms']:.2f} ms/step at any episode length")
    print_time_window(f)
    result.update({"a_constant_cost": a, "b_recompute": b, "c_throughput": c, "d_nbytes_per_env": d,
                   "e_unbounded": e, "f_time_window": f})
    return save_result(result, info, args.out)


def save_result(result: dict, info: dict, out: str) -> dict:
    """Note the load average at the end in ``info`` (part of ``result``), write ``result`` to ``out``."""
    with contextlib.suppress(OSError):
        info["load_average_end"] = os.getloadavg()
    write_json(Path(out) if Path(out).is_absolute() else ROOT / out, result)
    print(f"wrote {out}")
    return result


if __name__ == "__main__":
    main()

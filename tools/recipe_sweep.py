"""Pretraining recipes side by side: several ``pretrain/train_psb.py`` runs in parallel, one table.

Each recipe is ``NAME=FLAGS`` (flags of ``train_psb.py``). All recipes share ``--common`` flags and the
data; each writes ``<out>/<NAME>/`` and its log ``<out>/<NAME>.log``. Up to ``--parallel`` runs go at
once, each with ``--threads`` CPU threads. The table lists the periodic held-out FG-ARI (the log's
``step N:`` lines) and the final 1× / 2× / 4× numbers from ``metrics.json``.

    python tools/recipe_sweep.py --recipes "base=" "lr4e-4=--lr 4e-4" --common "--steps 2000"
    # on a GPU machine, many recipes at once (fp32, as on the CPU):
    python tools/recipe_sweep.py --parallel 12 --common "--device cuda --no-amp --eval-every 500"

With several runs sharing a device, their wall-clock says nothing about the CPU budget: choose each
recipe's ``--steps`` from its CPU cost per step (``benchmarks/model_speed.py``) and compare FG-ARI.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import subprocess
import sys
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

from psb_rl.cli import parse_dataclass
from psb_rl.utils import child_pythonpath, write_json

ROOT = Path(__file__).resolve().parents[1]

EVAL_LINE = re.compile(r"^step (\d+): (.*)$")


@dataclass
class Args:
    """Run several pretraining recipes in parallel and tabulate their held-out FG-ARI."""

    recipes: list[str] = field(default_factory=lambda: ["default="])
    """recipes as NAME=FLAGS (FLAGS: train_psb.py flags, may be empty)"""
    common: str = ""
    """flags added to every recipe (before its own, so a recipe can override them)"""
    parallel: int = 1
    """runs at a time"""
    threads: int = 1
    """CPU threads per run (OMP_NUM_THREADS and torch)"""
    out: str = "runs/sweep"
    """parent directory of the run directories and logs"""
    results: str = "benchmarks/results/recipe_sweep.json"
    """where the JSON table goes"""


def parse_recipe(text: str) -> tuple[str, list[str]]:
    """``"NAME=FLAGS"`` → ``(NAME, [flags])``; NAME must be a plain file name."""
    name, sep, flags = text.partition("=")
    if not sep or not re.fullmatch(r"[A-Za-z0-9_.-]+", name):
        raise SystemExit(f"error: recipe {text!r} must be NAME=FLAGS with NAME of letters, digits, '_', '.', '-'")
    return name, shlex.split(flags)


def read_run(log: Path, run_dir: Path, since: float = 0.0) -> dict:
    """Periodic evaluations from the log and the final evaluation from ``metrics.json``.

    :param since: a ``metrics.json`` older than this (``time.time()`` seconds) is ignored: it was left
        by an earlier run in the same directory.
    """
    periodic = []
    text = log.read_text(errors="replace") if log.exists() else ""
    for line in text.replace("\r", "\n").splitlines():
        match = EVAL_LINE.match(line.strip())
        if match:
            values = dict(item.split("=") for item in match.group(2).split(", ") if "=" in item)
            periodic.append({"step": int(match.group(1)), **{k: float(v) for k, v in values.items()}})
    result: dict = {"periodic": periodic}
    metrics = run_dir / "metrics.json"
    if metrics.exists() and metrics.stat().st_mtime >= since:
        data = json.loads(metrics.read_text())
        result.update(steps=data["steps"], train_seconds=data["train_seconds"],
                      final={length: {k: data["evaluation"][length][k] for k in ("fg_ari", "fg_ari_frame", "miou", "psnr")
                                      if k in data["evaluation"][length]} for length in data["evaluation"]})
    else:
        result["error"] = (text.strip().splitlines() or ["no output"])[-1][-300:]
    return result


def main(argv: list[str] | None = None) -> dict:
    """Run the sweep, print the table, write the JSON. :return: ``{name: result}``."""
    args: Args = parse_dataclass(Args, argv, description=__doc__)
    parsed = [parse_recipe(text) for text in args.recipes]
    recipes = dict(parsed)
    if len(recipes) < len(parsed):  # two runs would share one directory
        raise SystemExit(f"error: recipe names must differ, got {[name for name, _ in parsed]}")
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "PYTHONUNBUFFERED": "1",
           "PYTHONPATH": child_pythonpath(ROOT)}
    script = str(ROOT / "pretrain" / "train_psb.py")
    pending = list(recipes.items())
    running: dict[str, subprocess.Popen] = {}
    started: dict[str, float] = {}  # time.time() at launch: the wall-clock and the freshness of metrics.json
    seconds: dict[str, float] = {}
    while pending or running:
        while pending and len(running) < args.parallel:
            name, flags = pending.pop(0)
            argv_run = [sys.executable, script, *shlex.split(args.common), *flags, "--out", str(out / name),
                        "--no-progress"]
            with open(out / f"{name}.log", "w") as log:  # the child keeps its own copy of the handle
                proc = subprocess.Popen(argv_run, stdout=log, stderr=subprocess.STDOUT, env=env, cwd=ROOT)
            running[name], started[name] = proc, time.time()
            print(f"started {name}: {shlex.join(argv_run[2:])}", flush=True)
        time.sleep(1.0)
        for name, proc in list(running.items()):
            if proc.poll() is not None:
                seconds[name] = time.time() - started[name]
                del running[name]
                print(f"finished {name} (exit {proc.returncode}, {seconds[name]:.0f} s)", flush=True)

    results = {name: {"flags": shlex.join(flags), "wall_seconds": seconds[name],
                      **read_run(out / f"{name}.log", out / name, started[name])} for name, flags in recipes.items()}
    steps = sorted({p["step"] for r in results.values() for p in r["periodic"]})
    print("\nFG-ARI (video, 1×) on held-out clips at each evaluation; final 1× / 2× / 4×")
    print("| recipe | " + " | ".join(str(s) for s in steps) + " | final 1× / 2× / 4× | steps |")
    print("| --- " * (len(steps) + 3) + "|")
    for name, result in results.items():
        by_step = {p["step"]: p.get("fg_ari") for p in result["periodic"]}
        cells = [f"{by_step[s]:.3f}" if by_step.get(s) is not None else "" for s in steps]
        final = result.get("final")
        final_text = " / ".join(f"{final[k]['fg_ari']:.3f}" for k in ("1x", "2x", "4x") if k in final) if final \
            else f"error: {result.get('error', '')[:60]}"
        print(f"| {name} | " + " | ".join(cells) + f" | {final_text} | {result.get('steps', '')} |")
    write_json(args.results, {"benchmark": "recipe_sweep", "args": asdict(args), "results": results})
    print(f"wrote {args.results}")
    return results


if __name__ == "__main__":
    main()

"""Compare PPO recipes by the final success of several seeds each, with confidence intervals.

    python tools/compare_recipes.py \
        --recipes default=runs/slots_s0,runs/slots_s1 env32=runs/slots_env32_s0,runs/slots_env32_s1 \
        --episodes 1000 --target 0.9

One agent's success over 1,000 episodes is measured to about ±0.01, but agents of the same recipe
trained with different seeds differ by much more (0.75 to 0.87 for five default slot agents of
PSB/OddOneOut-v0), so whether a recipe beats another is a question about seeds. For every run this
rolls the saved agent with ``agents/evaluate.py`` (reset seeds ``--seed`` on, greedy actions; the
result is cached in ``RUN/evaluation_<episodes>ep_seed<seed>.json`` with the agent's hash, so a rerun
only evaluates new or changed agents), then reports per recipe the mean over seeds with a 95%
Student-t interval, and for every other recipe its difference from the baseline (the first recipe
unless ``--baseline``) with Welch's 95% interval and two-sided p-value. Prints a table, writes JSON.
"""

from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy import stats

from psb_rl.cli import parse_dataclass, run_main
from psb_rl.shards import sha256_file

if str(Path(__file__).resolve().parents[1]) not in sys.path:  # run as a script: agents/ is a folder of the
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # repository root, not an installed module
from psb_rl.utils import write_json


@dataclass
class Args:
    """Final success of PPO recipes over seeds: means, 95% intervals and differences from a baseline."""

    recipes: list[str] = field(default_factory=list)
    """NAME=RUN,RUN,...: a recipe's name and its run folders (one per seed) of agents/train_ppo.py"""
    baseline: str | None = None
    """recipe the others are compared with (default: the first)"""
    episodes: int = 1000
    """evaluation episodes per run"""
    seed: int = 100_000
    """reset seed of the first evaluation episode (episode k uses seed + k)"""
    target: float | None = None
    """success rate to check each recipe's interval against (e.g. 0.9)"""
    device: str = "cpu"
    """torch device of the evaluations"""
    out: str = "benchmarks/results/compare_recipes.json"
    """JSON output"""


def parse_recipes(specs: list[str]) -> dict[str, list[Path]]:
    """``["a=R1,R2", "b=R3"]`` -> ``{"a": [R1, R2], "b": [R3]}``, in the given order.

    :raises ValueError: for a spec without ``NAME=``, an empty run list, a repeated name or run, or a
        folder without ``model.zip`` and ``args.json``.
    """
    if not specs:
        raise ValueError("give at least one recipe: --recipes NAME=RUN,RUN,... [NAME=RUN,...]")
    recipes: dict[str, list[Path]] = {}
    seen: dict[Path, str] = {}
    for spec in specs:
        name, sep, runs_text = spec.partition("=")
        name = name.strip()
        runs = [Path(r.strip()) for r in runs_text.split(",") if r.strip()]
        if not sep or not name or not runs:
            raise ValueError(f"recipe {spec!r} is not NAME=RUN[,RUN...] (e.g. default=runs/a,runs/b)")
        if name in recipes:
            raise ValueError(f"recipe name {name!r} is given twice; give each recipe one NAME=... entry")
        for run in runs:
            missing = [f for f in ("model.zip", "args.json") if not (run / f).is_file()]
            if missing:
                raise ValueError(
                    f"{run} (recipe {name!r}) lacks {' and '.join(missing)}: pass run folders written by "
                    "agents/train_ppo.py"
                )
            if run.resolve() in seen:
                raise ValueError(f"{run} is in recipes {seen[run.resolve()]!r} and {name!r}: a run belongs to one recipe")
            seen[run.resolve()] = name
        recipes[name] = runs
    return recipes


def run_success(run: Path, episodes: int, seed: int, device: str = "cpu", deterministic: bool = True) -> dict[str, Any]:
    """The saved agent's success over ``episodes`` episodes (greedy, or sampled actions with
    ``deterministic=False``), from the cache when it is current.

    :return: ``success_rate``, ``failure_rate``, ``timeout_rate``, ``mean_reward``, ``mean_length``, ``episodes``, ``seed``,
        ``model_sha256`` and ``cached`` (True when read from ``RUN/evaluation_<episodes>ep_seed<seed>.json``).
    """
    cache = run / f"evaluation_{episodes}ep_seed{seed}{'' if deterministic else '_sampled'}.json"
    sha = sha256_file(run / "model.zip")
    if cache.is_file():
        try:
            saved = json.loads(cache.read_text())
        except json.JSONDecodeError:
            saved = {}
        if saved.get("model_sha256") == sha:
            return {**saved, "cached": True}
    from agents.evaluate import EvalArgs, evaluate

    result = evaluate(EvalArgs(run=str(run), episodes=episodes, seed=seed, gif="none", device=device,
                               deterministic=deterministic))
    keep = ("success_rate", "failure_rate", "timeout_rate", "mean_reward", "mean_length")
    record = {k: result[k] for k in keep} | {"episodes": episodes, "seed": seed, "deterministic": deterministic,
                                            "model_sha256": sha}
    write_json(cache, record)
    return {**record, "cached": False}


def summarise(values: list[float], confidence: float = 0.95) -> dict[str, Any]:
    """Mean over seeds with a Student-t interval.

    :param values: one success rate per seed.
    :return: ``n``, ``mean``, ``std`` (sample, ddof 1; NaN for one seed), ``low`` / ``high`` (the interval of
        the mean; NaN for one seed), ``min``, ``max``.
    """
    x = np.asarray(values, dtype=np.float64)
    n = len(x)
    mean = float(x.mean())
    if n < 2:
        return {"n": n, "mean": mean, "std": math.nan, "low": math.nan, "high": math.nan, "min": mean, "max": mean}
    std = float(x.std(ddof=1))
    half = float(stats.t.ppf(0.5 + confidence / 2, n - 1)) * std / math.sqrt(n)
    return {"n": n, "mean": mean, "std": std, "low": mean - half, "high": mean + half,
            "min": float(x.min()), "max": float(x.max())}


def welch(a: list[float], b: list[float], confidence: float = 0.95) -> dict[str, float]:
    """Difference of means ``mean(b) - mean(a)`` with Welch's interval and two-sided p-value.

    :return: ``diff``, ``low``, ``high``, ``p`` and ``df`` (Welch–Satterthwaite); NaN where a group has fewer
        than two values or both have zero variance.
    """
    x, y = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    diff = float(y.mean() - x.mean())
    nan = {"diff": diff, "low": math.nan, "high": math.nan, "p": math.nan, "df": math.nan}
    if len(x) < 2 or len(y) < 2:
        return nan
    vx, vy = x.var(ddof=1) / len(x), y.var(ddof=1) / len(y)
    se = math.sqrt(vx + vy)
    if se == 0.0:
        return nan
    df = (vx + vy) ** 2 / (vx**2 / (len(x) - 1) + vy**2 / (len(y) - 1))
    half = float(stats.t.ppf(0.5 + confidence / 2, df)) * se
    p = float(2.0 * stats.t.sf(abs(diff) / se, df))
    return {"diff": diff, "low": diff - half, "high": diff + half, "p": p, "df": float(df)}


def verdict(comparison: dict[str, float]) -> str:
    """Plain words for a :func:`welch` result."""
    if math.isnan(comparison["p"]):
        return "not testable (needs two or more seeds in both recipes)"
    if comparison["low"] > 0:
        return "better than the baseline (95% interval above 0)"
    if comparison["high"] < 0:
        return "worse than the baseline (95% interval below 0)"
    return "not distinguishable from the baseline at 95%"


def target_verdict(summary: dict[str, Any], target: float) -> str:
    """Whether a recipe's 95% interval lies above, below or around ``target``."""
    if math.isnan(summary["low"]):
        return f"one seed: {summary['mean']:.3f} vs {target}, no interval"
    if summary["low"] >= target:
        return f"reaches {target} (interval above it)"
    if summary["high"] < target:
        return f"misses {target} (interval below it)"
    return f"undecided about {target} (interval contains it)"


def compare(args: Args) -> dict[str, Any]:
    """Evaluate every run, summarise every recipe and compare each with the baseline.

    :return: ``recipes`` (name -> runs with their results and the summary), ``baseline``, ``comparisons``
        (name -> Welch result and verdict) and the evaluation settings.
    """
    if args.episodes < 1:
        raise ValueError(f"--episodes must be >= 1, got {args.episodes}")
    recipes = parse_recipes(args.recipes)
    baseline = args.baseline or next(iter(recipes))
    if baseline not in recipes:
        raise ValueError(f"--baseline {baseline!r} is not one of the recipes {list(recipes)}")
    report: dict[str, Any] = {"episodes": args.episodes, "seed": args.seed, "baseline": baseline,
                              "target": args.target, "recipes": {}, "comparisons": {}}
    rates: dict[str, list[float]] = {}
    for name, runs in recipes.items():
        results = [run_success(run, args.episodes, args.seed, args.device) | {"run": str(run)} for run in runs]
        rates[name] = [r["success_rate"] for r in results]
        summary = summarise(rates[name])
        if args.target is not None:
            summary["target"] = target_verdict(summary, args.target)
        report["recipes"][name] = {"runs": results, "summary": summary}
    for name in recipes:
        if name != baseline:
            comparison = welch(rates[baseline], rates[name])
            report["comparisons"][name] = comparison | {"verdict": verdict(comparison)}
    return report


def format_report(report: dict[str, Any]) -> str:
    """The report as text: one line per recipe, then one per comparison."""
    lines = [f"success over {report['episodes']} greedy episodes per run (reset seeds {report['seed']} on)"]
    for name, entry in report["recipes"].items():
        s = entry["summary"]
        per_seed = " / ".join(f"{r['success_rate']:.3f}" for r in entry["runs"])
        interval = "" if math.isnan(s["low"]) else f", 95% interval [{s['low']:.3f}, {s['high']:.3f}]"
        target = f"; {s['target']}" if "target" in s else ""
        lines.append(f"{name}: {s['mean']:.3f} over {s['n']} seeds ({per_seed}){interval}{target}")
    for name, c in report["comparisons"].items():
        detail = "" if math.isnan(c["p"]) else f", 95% interval [{c['low']:+.3f}, {c['high']:+.3f}], p = {c['p']:.2g}"
        lines.append(f"{name} - {report['baseline']}: {c['diff']:+.3f}{detail}: {c['verdict']}")
    return "\n".join(lines)


def nan_to_none(value: Any) -> Any:
    """``value`` with every float NaN replaced by None (NaN is not valid JSON)."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list):
        return [nan_to_none(v) for v in value]
    return value


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """CLI entry point: evaluate, print the table, write JSON. :return: the report."""
    args = parse_dataclass(Args, argv)
    report = compare(args)
    print(format_report(report))
    write_json(args.out, nan_to_none(report))
    print(f"wrote {args.out}")
    return report


if __name__ == "__main__":
    sys.exit(run_main(main))

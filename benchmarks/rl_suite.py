"""RL suite: PPO on slots, pixels and an oracle, over seeds, on tasks users recognise.

    python benchmarks/rl_suite.py --tasks doorkey --seeds 0 1 2                 # one task, all encoders
    python benchmarks/rl_suite.py --tasks doorkey --encoders slots --seeds 3    # add a seed to one row
    python benchmarks/rl_suite.py --speed doorkey                                # PPO wall-clock, side by side
    python benchmarks/rl_suite.py --quick                                        # a smoke test of minutes

For every task the suite (1) makes the task's own PSB checkpoint with the commands it prints (collection
of random-policy videos, then ``pretrain/train_psb.py``), or reuses it; (2) trains PPO with
``agents/train_ppo.py`` on **slots** (the frozen checkpoint, the slot recipes of :data:`RECIPES`: the slot
vectors with their geometry, and the geometry alone),
**pixels** (NatureCNN on exactly the frames the checkpoint was trained on: same source, crop and size;
the script's default PPO settings) and an **oracle** (the built-in environments' object states, MiniGrid's
fully observed symbolic grid, read with the slot agents' extractor and PPO settings); (3) scores each agent on
held-out episodes (reset seeds no training or evaluation episode used) with actions sampled from the policy,
as during training, for every agent alike (a greedy policy that has not sharpened yet can loop forever in
MiniGrid). Success is the environment's ``is_success``; on MiniGrid an episode that terminates with a
positive reward.

Every run lives in ``OUT/<task>/<encoder>/seed<k>`` and records its command, commit and checkpoint digest;
finished runs are reused and interrupted ones continued from their last saved agent (``--save-freq``), so
the suite can be run in pieces and two processes can work on different seeds or encoders at once. Output:
``benchmarks/results/rl_suite.json`` (rows ``{task, encoder, seed, total_steps, success, mean_return,
steps_to_threshold, wall_clock_s, checkpoint_sha256, commit}`` plus a summary per task and encoder with 95 %
intervals) and one learning-curve PNG per task (mean and band over seeds).
"""

from __future__ import annotations

import dataclasses
import json
import math
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import tools/ and benchmarks/ as modules, as the tests do
    sys.path.insert(0, str(ROOT))

from benchmarks.train_speed import machine_info  # noqa: E402
from psb_rl.cli import parse_dataclass, run_main  # noqa: E402
from psb_rl.utils import repository_commit, resolve_device, write_json  # noqa: E402


@dataclass(frozen=True)
class Task:
    """One task of the suite.

    :param env: gymnasium id.
    :param total_steps: PPO environment steps per run.
    :param env_kwargs: ``gym.make`` keyword arguments (also used to record the pretraining videos).
    :param collect: ``pretrain/collect_rollouts.py`` arguments beyond ``--env``, ``--env-kwargs`` and ``--out``.
    :param pretrain: ``pretrain/train_psb.py`` arguments beyond ``--data`` and ``--out``.
    :param n_envs: parallel environments of PPO.
    :param eval_freq: environment steps between the evaluations of the learning curve.
    """

    env: str
    total_steps: int
    env_kwargs: dict[str, Any] = field(default_factory=dict)
    collect: tuple[str, ...] = ()
    pretrain: tuple[str, ...] = ()
    n_envs: int = 8
    eval_freq: int = 10_000


MINIGRID_COLLECT = ("--episodes", "150", "--pixels", "render", "--resize", "40", "--max-episode-steps", "100")
BUILTIN_COLLECT = ("--episodes", "300", "--resize", "64")

TASKS: dict[str, Task] = {
    "doorkey": Task("MiniGrid-DoorKey-5x5-v0", 100_000, {"highlight": False}, MINIGRID_COLLECT,
                    ("--preset", "minigrid")),
    "dynamic_obstacles": Task("MiniGrid-Dynamic-Obstacles-5x5-v0", 100_000, {"highlight": False}, MINIGRID_COLLECT,
                              ("--preset", "minigrid", "--env", "MiniGrid-Dynamic-Obstacles-5x5-v0")),
    "reach": Task("PSB/ObjectReach-v0", 300_000, {}, BUILTIN_COLLECT, ("--preset", "builtin", "--env",
                                                                       "PSB/ObjectReach-v0"), n_envs=16,
                  eval_freq=25_000),
    "push": Task("PSB/ObjectPush-v0", 500_000, {}, BUILTIN_COLLECT, ("--preset", "builtin", "--env",
                                                                     "PSB/ObjectPush-v0"), n_envs=16,
                 eval_freq=25_000),
    "oddoneout": Task("PSB/OddOneOut-v0", 1_000_000, {}, BUILTIN_COLLECT, ("--preset", "builtin", "--env",
                                                                           "PSB/OddOneOut-v0"), n_envs=16,
                      eval_freq=50_000),
}
"""The suite: MiniGrid tasks at 100k PPO steps (a pixel agent solves DoorKey-5x5 in about 75k), the built-in
tasks at the budgets where published slot agents reach their plateau."""

OBJECT_AGENT_PPO: dict[str, Any] = {"net_arch": [], "n_epochs": 10, "batch_size": 128}
"""PPO settings of the agents that read sets of objects (slots and the oracle): the policy and value heads read
the set extractor's features directly, as SB3's CnnPolicy heads read the CNN's, and each rollout is used for
10 epochs of minibatches of 128 (``agents/train_ppo.py``: no hidden head layers' default is two tanh layers of
64; 4 epochs of 256)."""

RECIPES: dict[str, dict[str, Any]] = {
    "slots": {"slot_geometry": True, **OBJECT_AGENT_PPO},
    "state": dict(OBJECT_AGENT_PPO),
    "slots_plain": {},
    "slots_geometry_only": {"geometry_only": True, **OBJECT_AGENT_PPO},
}
"""Arguments beyond ``agents/train_ppo.py``'s defaults, per agent: ``slots`` (the table's main row: the frozen
encoder's slots with what each owns in the frame (``--slot-geometry``), and :data:`OBJECT_AGENT_PPO`), ``state`` (the oracle,
with the same PPO settings), ``slots_plain`` (the slot vectors alone, every default) and ``slots_geometry_only``
(each slot's geometry in place of its vector, ``--geometry-only``, with :data:`OBJECT_AGENT_PPO`). ``pixels``
keeps the script's defaults."""

ENCODERS = ("slots", "pixels", "state", "slots_plain", "slots_geometry_only")


@dataclass
class Args:
    """PPO on slots, pixels and an oracle over seeds, on each task of the suite."""

    tasks: list[str] = field(default_factory=lambda: list(TASKS))
    """tasks to run (see TASKS)"""
    encoders: list[str] = field(default_factory=lambda: ["slots", "slots_geometry_only", "pixels", "state"])
    """agents to train: slots, pixels, state (the oracle), slots_plain, slots_geometry_only"""
    seeds: list[int] = field(default_factory=lambda: [0, 1, 2])
    """PPO seeds"""
    total_steps: int | None = None
    """override every task's PPO budget"""
    eval_episodes: int = 10
    """episodes per evaluation of the learning curve"""
    final_episodes: int = 200
    """held-out episodes of the final score"""
    final_seed: int = 1_000_000
    """reset seed of the first held-out episode (training and curve evaluations use seeds below 100,000)"""
    pretrain_seed: int = 0
    """seed of the pretraining run (one checkpoint per task)"""
    save_freq: int = 25_000
    """save the agent every this many steps so that an interrupted run continues"""
    out: str = "runs/rl_suite"
    """folder of the checkpoints and runs"""
    data: str = "data/rl_suite"
    """folder of the pretraining videos"""
    results: str = "benchmarks/results/rl_suite"
    """prefix of the results (.json, and one _<task>.png per task)"""
    torch_threads: int = 1
    """torch CPU threads per run"""
    device: str = "auto"
    """torch device of PPO and the encoder"""
    run: bool = True
    """train what is missing (--no-run: only aggregate the finished runs)"""
    speed: str | None = None
    """instead of the suite: PPO wall-clock of slots vs pixels on this task, alternating runs of --speed-steps"""
    speed_steps: int = 8192
    """environment steps of one timed run"""
    speed_repeats: int = 3
    """timed runs per encoder"""
    quick: bool = False
    """smoke test: tiny budgets on one seed (not a result)"""


# ----------------------------------------------------------------------------------------------------
# provenance


def run_script(script: str, arguments: list[str], log: Path) -> list[str]:
    """Run one of the project's scripts as a user would, logging to ``log``. :return: the command."""
    command = [sys.executable, str(ROOT / script), *arguments]
    log.parent.mkdir(parents=True, exist_ok=True)
    printable = " ".join(["python", script, *(f"'{a}'" if "{" in a else a for a in arguments)])
    print(f"$ {printable}", flush=True)
    with log.open("a") as f:
        f.write(f"$ {printable}\n")
        f.flush()
        result = subprocess.run(command, cwd=ROOT, stdout=f, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise RuntimeError(f"{printable} failed with exit code {result.returncode}; see {log}")
    return [printable]


# ----------------------------------------------------------------------------------------------------
# the task's checkpoint


def task_checkpoint(args: Args, name: str, task: Task) -> tuple[Path, list[str]]:
    """The task's PSB checkpoint: made by collection + pretraining, or reused when finished.

    :return: the checkpoint path and the commands that made it (recorded in ``psb/suite.json``).
    """
    data, run = Path(args.data) / name, Path(args.out) / name / "psb"
    checkpoint, record = run / "psb.ckpt", run / "suite.json"
    if (run / "metrics.json").is_file() and checkpoint.is_file():
        return checkpoint, json.loads(record.read_text())["commands"] if record.is_file() else []
    if not args.run:
        raise FileNotFoundError(f"{checkpoint} is missing; run the suite without --no-run to make it")
    commands: list[str] = []
    env_kwargs = ["--env-kwargs", json.dumps(task.env_kwargs)] if task.env_kwargs else []
    collect = list(task.collect)
    pretrain = list(task.pretrain)
    if args.quick:
        collect = [*_without(collect, "--episodes"), "--episodes", "6"]
        pretrain = [*pretrain, "--steps", "20", "--eval-clips", "4"]
    if not (data / "manifest.json").is_file():
        commands += run_script("pretrain/collect_rollouts.py",
                               ["--env", task.env, *env_kwargs, *collect, "--out", str(data), "--no-progress",
                                "--torch-threads", str(args.torch_threads)], run.parent / "pretrain.log")
    resume = ["--resume"] if (run / "train_state.pt").is_file() else []
    commands += run_script("pretrain/train_psb.py",
                           ["--data", str(data), "--out", str(run), *pretrain, "--seed", str(args.pretrain_seed),
                            "--torch-threads", str(args.torch_threads), "--no-progress", *resume],
                           run.parent / "pretrain.log")
    write_json(record, {"commands": commands, "commit": repository_commit(ROOT)})
    return checkpoint, commands


def _without(arguments: list[str], flag: str) -> list[str]:
    """``arguments`` without ``flag`` and its value."""
    if flag not in arguments:
        return arguments
    i = arguments.index(flag)
    return arguments[:i] + arguments[i + 2:]


# ----------------------------------------------------------------------------------------------------
# PPO runs


def run_dir(args: Args, name: str, encoder: str, seed: int) -> Path:
    """The folder of one PPO run: ``OUT/<task>/<encoder>/seed<k>``."""
    return Path(args.out) / name / encoder / f"seed{seed}"


def train_arguments(args: Args, name: str, task: Task, encoder: str, seed: int, checkpoint: Path) -> list[str]:
    """``agents/train_ppo.py`` arguments of one run (pixels and the oracle keep the script's defaults)."""
    total = args.total_steps or task.total_steps
    out = run_dir(args, name, encoder, seed)
    arguments = ["--env", task.env, "--encoder", "slots" if encoder.startswith("slots") else encoder,
                 "--seed", str(seed), "--total-steps", str(total), "--n-envs", str(task.n_envs),
                 "--eval-freq", str(min(task.eval_freq, total)), "--eval-episodes", str(args.eval_episodes),
                 "--save-freq", str(args.save_freq), "--out", str(out), "--torch-threads", str(args.torch_threads),
                 "--device", args.device, "--no-progress-bar", "--no-eval-deterministic"]
    if task.env_kwargs:
        arguments += ["--env-kwargs", json.dumps(task.env_kwargs)]
    if encoder != "state":  # pixels see the checkpoint's frames: its source, crop and size
        arguments += ["--checkpoint", str(checkpoint)]
    for key, value in RECIPES.get(encoder, {}).items():
        flag = "--" + key.replace("_", "-")
        if value is True:
            arguments.append(flag)
        elif isinstance(value, list):
            arguments += [flag, *map(str, value)]
        else:
            arguments += [flag, str(value)]
    if args.quick:
        arguments += ["--n-steps", "32", "--batch-size", "64", "--features-dim", "32", "--d-model", "32",
                      "--num-layers", "1", "--num-heads", "2"]
    return arguments


def run_ppo(args: Args, name: str, task: Task, encoder: str, seed: int, checkpoint: Path) -> dict[str, Any] | None:
    """Train one run (or continue / reuse it) and score it on held-out episodes.

    :return: the run's row, or None when it is not finished and ``--no-run`` was given.
    """
    out = run_dir(args, name, encoder, seed)
    total = args.total_steps or task.total_steps
    summary_path = out / "summary.json"
    finished = summary_path.is_file() and json.loads(summary_path.read_text()).get("timesteps", 0) >= total
    command: list[str] = []
    if not finished:
        if not args.run:
            return None
        started_at = repository_commit(ROOT)  # the code the run starts from
        arguments = train_arguments(args, name, task, encoder, seed, checkpoint)
        if (out / "model.zip").is_file() and not stale_settings(out, arguments):
            arguments += ["--resume-from", str(out / "model.zip")]
        elif out.exists():  # nothing to continue: no agent saved yet, or one trained with other settings
            arguments += ["--overwrite"]
        command = run_script("agents/train_ppo.py", arguments, out.parent / f"seed{seed}.log")
    summary = json.loads(summary_path.read_text())
    record = json.loads((out / "args.json").read_text())
    from tools.compare_recipes import run_success

    score = run_success(out, args.final_episodes, args.final_seed, device="cpu", deterministic=False)
    provenance_path = out / "suite.json"
    provenance = json.loads(provenance_path.read_text()) if provenance_path.is_file() else {}
    if command:
        provenance = {"command": command[0], "commit": started_at}
        write_json(provenance_path, provenance)
    return {
        "task": name,
        "encoder": encoder,
        "seed": seed,
        "total_steps": int(summary["timesteps"]),
        "success": float(score["success_rate"]),
        "mean_return": float(score["mean_reward"]),
        "steps_to_threshold": None,  # set once the pixel agents' final mean is known
        "wall_clock_s": float(summary["train_time_s"]),
        "checkpoint_sha256": record.get("checkpoint_sha256"),
        "commit": provenance.get("commit", "unknown"),
        "command": provenance.get("command"),
        "curve": [(int(r["timesteps"]), float(r["success_rate"])) for r in summary["curve"]],
        "run": str(out),
    }


RUN_ONLY_FIELDS = ("out", "total_steps", "resume_from", "overwrite", "torch_threads", "device", "progress_bar")
"""train_ppo.py arguments that may differ between the parts of one continued run."""


def stale_settings(out: Path, arguments: list[str]) -> list[str]:
    """The settings of ``arguments`` that the run saved in ``out`` was trained with other values of (a run of
    an earlier recipe is started over, not continued)."""
    from agents.train_ppo import parse_args

    wanted = dataclasses.asdict(parse_args(arguments))
    recorded = json.loads((out / "args.json").read_text()) if (out / "args.json").is_file() else {}
    for record in (wanted, recorded):  # the same keyword arguments, however the JSON was spaced
        if isinstance(record.get("env_kwargs"), str):
            record["env_kwargs"] = json.loads(record["env_kwargs"])
    stale = [key for key, value in wanted.items()
             if key not in RUN_ONLY_FIELDS and key in recorded and recorded[key] != value]
    if stale:
        print(f"{out}: trained with other {stale}; starting it over", flush=True)
    return stale


def steps_to_threshold(curve: list[tuple[int, float]], threshold: float) -> int | None:
    """The first evaluation step whose success reaches ``threshold`` (None if none does)."""
    return next((steps for steps, success in curve if not math.isnan(success) and success >= threshold), None)


def summarise_task(rows: list[dict[str, Any]]) -> dict[str, Any]:
    """Per encoder: final success (mean, 95 % interval), mean return, steps to threshold and wall-clock."""
    from tools.compare_recipes import summarise

    pixels = [r["success"] for r in rows if r["encoder"] == "pixels"]
    # no threshold where the pixel agents never succeed: every curve would reach 0 at its first evaluation
    threshold = 0.9 * float(np.mean(pixels)) if pixels and np.mean(pixels) > 0 else None
    table: dict[str, Any] = {"threshold": threshold}
    for row in rows:
        if threshold is not None:
            row["steps_to_threshold"] = steps_to_threshold(row["curve"], threshold)
    for encoder in dict.fromkeys(r["encoder"] for r in rows):
        mine = [r for r in rows if r["encoder"] == encoder]
        reached = [r["steps_to_threshold"] for r in mine]
        table[encoder] = {
            "success": summarise([r["success"] for r in mine]),
            "mean_return": float(np.mean([r["mean_return"] for r in mine])),
            "steps_to_threshold": reached,
            "seeds_reaching_threshold": sum(s is not None for s in reached),
            "wall_clock_s": float(np.median([r["wall_clock_s"] for r in mine])),
        }
    return table


def save_task_plot(path: Path, name: str, rows: list[dict[str, Any]]) -> Path:
    """Learning curves of one task: mean success over seeds and its min-max band, one line per encoder."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from psb_rl.utils import atomic_path

    fig, ax = plt.subplots(figsize=(6.0, 4.0), dpi=100)
    try:
        for encoder in dict.fromkeys(r["encoder"] for r in rows):
            curves = [r["curve"] for r in rows if r["encoder"] == encoder]
            grid = sorted({steps for curve in curves for steps, _ in curve})
            values = np.array([np.interp(grid, [s for s, _ in c], [v for _, v in c]) for c in curves])
            ax.plot(grid, values.mean(0), label=f"{encoder} ({len(curves)} seeds)")
            ax.fill_between(grid, values.min(0), values.max(0), alpha=0.2)
        ax.set(title=f"PPO on {TASKS[name].env}", xlabel="environment steps", ylabel="success (evaluation)",
               ylim=(-0.02, 1.02))
        ax.legend(loc="best")
        fig.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(path, suffix=".png") as tmp:
            fig.savefig(tmp)
    finally:
        plt.close(fig)
    return path


# ----------------------------------------------------------------------------------------------------
# PPO wall-clock, slots vs pixels


def measure_speed(args: Args, name: str) -> dict[str, Any]:
    """Time PPO training of slots and pixels on one task, alternating, ``--speed-repeats`` runs each of
    ``--speed-steps`` steps without evaluation; the ratio of the medians is slots / pixels."""
    task = TASKS[name]
    checkpoint, _ = task_checkpoint(args, name, task)
    times: dict[str, list[float]] = {"slots": [], "pixels": []}
    for repeat in range(args.speed_repeats):
        for encoder in ("pixels", "slots"):
            out = Path(args.out) / name / "speed" / f"{encoder}{repeat}"
            arguments = train_arguments(dataclasses.replace(args, total_steps=args.speed_steps), name, task, encoder,
                                        repeat, checkpoint)
            arguments = [*_without(_without(arguments, "--eval-freq"), "--out"), "--eval-freq", "0", "--out", str(out),
                         "--overwrite", "--no-tensorboard"]
            run_script("agents/train_ppo.py", arguments, out.parent / "speed.log")
            times[encoder].append(float(json.loads((out / "summary.json").read_text())["train_time_s"]))
    slots, pixels = float(np.median(times["slots"])), float(np.median(times["pixels"]))
    return {"task": name, "steps": args.speed_steps, "repeats": args.speed_repeats, "times_s": times,
            "slots_median_s": slots, "pixels_median_s": pixels, "ratio": slots / pixels, "commit": repository_commit(ROOT),
            "date": time.strftime("%Y-%m-%d"), "machine": machine_info(resolve_device(args.device))}


# ----------------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> dict[str, Any]:
    """Run (or reuse) the suite's runs, then write the results JSON and the plots."""
    args: Args = parse_dataclass(Args, argv)
    unknown = [t for t in [*args.tasks, *([args.speed] if args.speed else [])] if t not in TASKS]
    if unknown:
        raise ValueError(f"unknown tasks {unknown}; choose from {sorted(TASKS)}")
    bad = [e for e in args.encoders if e not in ENCODERS]
    if bad:
        raise ValueError(f"unknown encoders {bad}; choose from {list(ENCODERS)}")
    if args.quick:
        args = dataclasses.replace(args, seeds=args.seeds[:1], total_steps=args.total_steps or 512, eval_episodes=2,
                                   final_episodes=4, save_freq=256, out=str(Path(args.out) / "quick"),
                                   data=str(Path(args.data) / "quick"), results=args.results + "_quick",
                                   speed_steps=256, speed_repeats=1)
    results = Path(args.results)
    if args.speed:
        speed = measure_speed(args, args.speed)
        path = write_json(results.parent / f"{results.name}_speed_{args.speed}.json", speed)
        print(f"PPO wall-clock on {TASKS[args.speed].env}, {args.speed_steps} steps: slots {speed['slots_median_s']:.0f} s, "
              f"pixels {speed['pixels_median_s']:.0f} s, ratio {speed['ratio']:.2f} (median of {args.speed_repeats}); {path}")
        return speed

    previous = json.loads(results.with_suffix(".json").read_text()) if results.with_suffix(".json").is_file() else {}
    rows_by_key = {(r["task"], r["encoder"], r["seed"]): r for r in previous.get("rows", [])}
    commands = previous.get("pretraining", {})
    for name in args.tasks:
        task = TASKS[name]
        checkpoint, made = task_checkpoint(args, name, task)
        if made:
            commands[name] = made
        for seed in args.seeds:  # seed-major: an interrupted suite has every encoder of the first seeds
            for encoder in args.encoders:
                row = run_ppo(args, name, task, encoder, seed, checkpoint)  # type: ignore[arg-type]
                if row is not None:
                    rows_by_key[(name, encoder, seed)] = row
                    print(f"{name} {encoder} seed {seed}: success {row['success']:.3f} "
                          f"({args.final_episodes} held-out episodes)", flush=True)
    rows = list(rows_by_key.values())
    summary = {}
    for name in dict.fromkeys(r["task"] for r in rows):
        task_rows = [r for r in rows if r["task"] == name]
        summary[name] = summarise_task(task_rows)
        save_task_plot(results.parent / f"{results.name}_{name}.png", name, task_rows)
    report = {
        "benchmark": "rl_suite",
        "date": time.strftime("%Y-%m-%d"),
        "machine": machine_info(resolve_device(args.device)),
        "final_episodes": args.final_episodes,
        "recipes": RECIPES,
        "pretraining": commands,
        "summary": summary,
        "rows": rows,
    }
    path = write_json(results.with_suffix(".json"), report)
    print("\n" + markdown_table(summary))
    print(f"wrote {path}")
    return report


def markdown_table(summary: dict[str, Any]) -> str:
    """The suite's results as a Markdown table: one row per task and agent."""
    lines = ["| task | agent | seeds | success (95 % interval) | steps to threshold, per seed | wall-clock (median) |",
             "| --- | --- | --- | --- | --- | --- |"]
    for name, table in summary.items():
        for encoder, entry in table.items():
            if encoder == "threshold":
                continue
            s = entry["success"]
            interval = "" if math.isnan(s["low"]) else f" [{s['low']:.2f}, {s['high']:.2f}]"
            reached = ", ".join("–" if steps is None else f"{steps // 1000}k" for steps in entry["steps_to_threshold"])
            lines.append(f"| {TASKS[name].env} | {encoder} | {s['n']} | {s['mean']:.2f}{interval} | {reached} | "
                         f"{entry['wall_clock_s'] / 60:.1f} min |")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(run_main(main))

"""Do Atari objects get slots of their own? Per game: collect random-policy rollouts with OCAtari's object
masks through the frame pipeline (the game's crop of ``psb_rl.presets.ATARI_CROPS``, which drops the score
bar), pretrain each recipe of the ``atari`` preset at a stated budget, and score held-out episodes with the
strict per-category object recall and FG-ARI of docs/metrics.md, beside the same model at its random
initialisation.

Rows are appended to (or updated in) benchmarks/results/atari_binding.json as ``{game, recipe, seed,
budget_minutes, steps, object_recall: {category: value}, fg_ari, health, ground_truth: "ocatari", commit, date,
machine}``; a row already there for the same game, recipe, seed and budget is reused, as is a finished run
directory, so an interrupted benchmark continues where it stopped. A slot-mask PNG per game and recipe goes
next to the JSON, and the Markdown table is printed (and written into a document between
``<!-- atari_binding -->`` markers with ``--doc``).

    python benchmarks/atari_binding.py                                           # every game, 10 min per run
    python benchmarks/atari_binding.py --games ALE/Pong-v5 --recipes static motion --minutes 10
    python benchmarks/atari_binding.py --minutes 0.05 --episodes 3 --max-episode-steps 40   # a smoke test
    python benchmarks/atari_binding.py --recipes static motion --minutes 10 --rescore  # score those rows again
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import os
import platform
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as a script: import benchmarks/ as a package, as the tests do
    sys.path.insert(0, str(ROOT))

from benchmarks.real_env_binding import score, untrained  # noqa: E402
from psb_rl.cli import bounded, parse_dataclass, run_main  # noqa: E402
from psb_rl.presets import ATARI_CROPS, PRESETS, apply_preset, env_slug, fit_to_env  # noqa: E402
from psb_rl.utils import atomic_path, repository_commit, write_json  # noqa: E402

RECIPES: dict[str, dict[str, Any]] = {
    # the ``atari`` preset's training fields, then these overrides
    "static": {"motion_alignment": 0.0},  # foreground = what differs from the median frame
    "motion": {"motion_alignment": 1.0},  # + what changed since the previous frame belongs to object slots
    "motion_fixed": {"motion_alignment": 1.0, "fixed_background": True},  # + slot 0 draws the median, unlearned
    "regions3": {"component_alignment": 3.0},  # slots pulled three times as hard onto one-colour regions
}
"""Recipes compared, as overrides of the ``atari`` preset's training fields."""

RANDOM_INIT = "random_init"
"""The control row's recipe name: the first recipe's model at its random initialisation."""

DOC_MARKER = "<!-- atari_binding -->"
"""The table is written between two of these lines in ``--doc``."""


@dataclass
class AtariBindingArgs:
    """Pretrain the ``atari`` preset's recipes per game and score them against OCAtari's objects."""

    games: list[str] = field(default_factory=lambda: list(ATARI_CROPS))
    """ALE ids, each with a crop in psb_rl.presets.ATARI_CROPS"""
    recipes: list[str] = field(default_factory=lambda: ["static", "motion"])
    """recipes (names of RECIPES) trained and scored on every game"""
    seeds: list[int] = field(default_factory=lambda: [0])
    """training seeds"""
    minutes: float = bounded(10.0, gt=0)
    """training budget per run (one torch thread)"""
    steps: int = bounded(100_000, min=1)
    """step cap (the time budget normally ends training first)"""
    episodes: int = bounded(16, min=2)
    """random-policy episodes collected per game (a tenth, at least one, are held out)"""
    max_episode_steps: int = bounded(800, min=8)
    """episode cap during collection"""
    eval_clips: int = bounded(64, min=1)
    """held-out clips of 4 frames scored per model"""
    data: str = "data/atari_binding"
    """rollouts: <data>/<game> (collected when missing)"""
    out: str = "runs/atari_binding"
    """run directories: <out>/<game>/<recipe>_s<seed> (reused when they hold a finished run)"""
    results: str = "benchmarks/results/atari_binding.json"
    """rows are appended to / updated in this JSON; slot-mask PNGs go beside it"""
    rescore: bool = False
    """score the rows already in --results again with the current evaluation (their finished runs are reused,
    nothing is trained), e.g. after a change of the health rule"""
    step_reps: int = bounded(0, min=0)
    """training steps timed per recipe beside the 32-px default recipe, alternately in one process, on random
    batches of the first game's frame size (0: skip); written to <results>_step_cost.json"""
    doc: str | None = None
    """also write the table into this Markdown file, between two '<!-- atari_binding -->' lines"""
    torch_threads: int = bounded(1, min=1)
    """torch threads"""


def collect(game: str, args: AtariBindingArgs) -> Path:
    """The game's rollouts with OCAtari masks (collected once)."""
    from psb_rl.rollouts import collect_rollouts
    from psb_rl.shards import load_manifest

    root = Path(args.data) / env_slug(game)
    if not (root / "manifest.json").exists():
        print(f"[{game}] collecting {args.episodes} episodes ...", flush=True)
        collect_rollouts(env_id=game, out=root, episodes=args.episodes, seed=0, pixels="obs",
                         resize=PRESETS["atari"].resize, crop=ATARI_CROPS[game],
                         max_episode_steps=args.max_episode_steps, progress=False)
    if not load_manifest(root).get("has_masks"):
        raise ValueError(f"the rollouts in {root} carry no object masks; OCAtari must be installed when they "
                         "are collected (pip install -e '.[atari-gt]'), then delete the folder and rerun")
    return root


def train_args(game: str, recipe: str, seed: int, data: Path, run: Path, args: AtariBindingArgs) -> Any:
    """The TrainArgs of one run: the ``atari`` preset fitted to ``game``, the recipe's overrides, the budget."""
    from psb_rl.training import TrainArgs

    preset = PRESETS["atari"]
    fitted = fit_to_env(apply_preset(TrainArgs(env=game), preset, {"env"}), preset, {"env"})
    return dataclasses.replace(
        fitted, **RECIPES[recipe], data=str(data), out=str(run), seed=seed, steps=args.steps,
        max_minutes=args.minutes, eval_every=0, progress=False, num_gifs=0, eval_clips=8,
        torch_threads=args.torch_threads,
    )


def pretrain(game: str, recipe: str, seed: int, data: Path, args: AtariBindingArgs) -> Path:
    """Train one recipe on ``data`` (or reuse a finished run); returns the run directory."""
    from psb_rl.training import train

    run = Path(args.out) / env_slug(game) / f"{recipe}_s{seed}"
    if not (run / "metrics.json").exists():
        print(f"[{game} {recipe} s{seed}] pretraining for {args.minutes} min ...", flush=True)
        train(train_args(game, recipe, seed, data, run, args))
    return run


def held_out(data: Path) -> tuple[list[dict[str, np.ndarray]], list[str] | None]:
    """The held-out episodes of the rollouts and their mask category names."""
    from psb_rl.data import RolloutDataset
    from psb_rl.training import held_out_episodes

    val = RolloutDataset(data, clip_len=1, split="val", verify=False)
    return held_out_episodes(val), val.manifest.get("mask_categories")


def save_slot_png(model: torch.nn.Module, data: Path, path: Path) -> Path:
    """One held-out clip of 4 frames: input | reconstruction | segmentation | each slot, a row per frame."""
    from PIL import Image

    from psb_rl.evaluation import sample_eval_clips
    from psb_rl.preprocessing import preprocess_frames
    from psb_rl.visualize import slot_video_frames

    episodes, _ = held_out(data)
    frames, _ = sample_eval_clips(episodes, 4, 1, seed=1)
    with torch.no_grad():
        video = preprocess_frames(frames[:1], model.config.image_size)
        out = model.eval()(video)
    panels = slot_video_frames(video[0], out.recon[0].clamp(0, 1), out.masks[0], out.per_slot_rgb[0])
    with atomic_path(path, suffix=".png") as tmp:
        Image.fromarray(np.concatenate(list(panels), axis=0)).save(tmp)
    return path


def step_cost(args: AtariBindingArgs, data_frames: Path) -> dict[str, Any]:
    """Median seconds of a training step of each recipe (fitted to the first game) and of the 32-px default
    recipe, timed alternately so both see the same machine load."""
    from benchmarks.real_env_binding import step_seconds
    from psb_rl.training import TrainArgs

    game = args.games[0]
    recipes = {"default": TrainArgs(), **{name: train_args(game, name, 0, data_frames, Path(args.out), args)
                                          for name in args.recipes}}
    times: dict[str, list[float]] = {name: [] for name in recipes}
    for _ in range(args.step_reps):
        for name, recipe in recipes.items():
            times[name] += step_seconds(recipe, 1)
    default = float(np.median(times["default"]))
    return {name: {"step_seconds": float(np.median(t)), "frames_per_step": recipes[name].batch_size * recipes[name].clip_len,
                   "step_vs_default": float(np.median(t)) / default, "game": game} for name, t in times.items()}


def load_rows(path: Path) -> list[dict[str, Any]]:
    """The rows already in the results file (none when it does not exist)."""
    if not path.exists():
        return []
    rows = json.loads(path.read_text())
    if not isinstance(rows, list):
        raise ValueError(f"{path} does not hold a list of rows; move it away or pass another --results")
    return rows


def row_key(row: dict[str, Any]) -> tuple[Any, ...]:
    """What makes two rows the same measurement."""
    return row["game"], row["recipe"], row["seed"], row["budget_minutes"]


def measure(game: str, recipe: str, seed: int, data: Path, args: AtariBindingArgs) -> dict[str, Any]:
    """Train (or reuse) and score one run; the random-init control scores the first recipe's initial model."""
    from psb_rl.checkpoint import load_checkpoint

    trained_recipe = args.recipes[0] if recipe == RANDOM_INIT else recipe
    run = pretrain(game, trained_recipe, seed, data, args)
    metrics = json.loads((run / "metrics.json").read_text())
    model = untrained(run, data) if recipe == RANDOM_INIT else load_checkpoint(run / "psb.ckpt")
    row = {"game": game, "recipe": recipe, "seed": seed, "budget_minutes": args.minutes,
           "steps": 0 if recipe == RANDOM_INIT else metrics["steps"],
           "train_seconds": 0.0 if recipe == RANDOM_INIT else metrics["train_seconds"],
           "crop": list(ATARI_CROPS[game]), "image_size": list(model.config.image_hw),
           **score(model, data, args), "ground_truth": "ocatari",
           "commit": repository_commit(Path(__file__).parent), "date": datetime.date.today().isoformat(),
           "machine": f"{platform.machine()} CPU, {os.cpu_count()} cores, {args.torch_threads} torch thread(s)"}
    if seed == args.seeds[0]:
        png = Path(args.results).with_name(f"atari_binding_{env_slug(game)}_{recipe}.png")
        row["slot_png"] = str(save_slot_png(model, data, png))
    return row


def run(argv: list[str] | None = None) -> int:
    """The benchmark (module docstring); :func:`main` adds the CLI's error handling."""
    args = parse_dataclass(AtariBindingArgs, argv, description=__doc__)
    torch.set_num_threads(args.torch_threads)
    unknown_games = sorted(set(args.games) - set(ATARI_CROPS))
    unknown_recipes = sorted(set(args.recipes) - set(RECIPES))
    if unknown_games or unknown_recipes or not args.recipes:
        raise ValueError(f"unknown games {unknown_games} / recipes {unknown_recipes}; games: {sorted(ATARI_CROPS)}, "
                         f"recipes (at least one): {sorted(RECIPES)}")
    from psb_rl.ground_truth import ocatari_available

    if not ocatari_available():
        raise ValueError("OCAtari is not installed: it gives the ground truth (pip install -e '.[atari-gt]')")
    results = Path(args.results)
    rows = load_rows(results)
    for game in args.games:
        data = collect(game, args)
        for seed in args.seeds:
            for recipe in [*args.recipes, RANDOM_INIT]:
                key = (game, recipe, seed, args.minutes)
                earlier = [row for row in rows if row_key(row) == key]
                if bool(earlier) != args.rescore:  # measured already, or (rescoring) never measured
                    continue
                row = measure(game, recipe, seed, data, args)
                if earlier:  # the model is the one trained then
                    row["trained_commit"] = earlier[0].get("trained_commit", earlier[0].get("commit"))
                rows = [r for r in rows if row_key(r) != key] + [row]
                write_json(results, rows)  # after every row: an interrupted benchmark keeps what it measured
    if args.step_reps:
        cost = step_cost(args, data_frames=Path(args.data) / env_slug(args.games[0]))
        write_json(results.with_name(results.stem + "_step_cost.json"), cost)
        for name, entry in cost.items():
            print(f"step cost {name:<8} {entry['step_seconds']:.2f} s/step = {entry['step_vs_default']:.2f}x the "
                  "32-px default step")
    # every row of these games and budget in the file, also recipes measured by earlier invocations
    wanted = [row for row in rows if row["game"] in args.games and row["budget_minutes"] == args.minutes]
    table = markdown_table(wanted, args, argv)
    print("\n" + table)
    if args.doc:
        write_doc_table(Path(args.doc), table)
    print(f"\nwrote {results}")
    return 0


def _recall_text(recall: dict[str, float] | None) -> str:
    return ", ".join(f"{k} {v:.2f}" for k, v in recall.items()) if recall else "n/a"


def _number(value: float | None) -> str:
    return "–" if value is None or not np.isfinite(value) else f"{value:.2f}"


def markdown_table(rows: list[dict[str, Any]], args: AtariBindingArgs, argv: list[str] | None) -> str:
    """The rows as a Markdown table, headed by the command, date, commit and machine that made them."""
    command = "python benchmarks/atari_binding.py " + " ".join(sys.argv[1:] if argv is None else argv)
    lines = [
        f"`{command.strip()}` — {datetime.date.today().isoformat()}, commit `{repository_commit(Path(__file__).parent)}`, "
        f"{platform.machine()} CPU, {args.torch_threads} torch thread(s), {args.minutes:g} min per run",
        "",
        "| game | recipe | seed | steps | object recall (OCAtari, strict) | FG-ARI | slots in use | object floor share "
        "| foreground in largest slot | health |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for row in rows:
        health = row.get("health") or {}
        verdict = "; ".join(health.get("collapse_reasons") or []) or "healthy"
        fg = row.get("fg_ari")
        lines.append(f"| {row['game']} | {row['recipe']} | {row['seed']} | {row['steps']} | "
                     f"{_recall_text(row.get('object_recall'))} | {'n/a' if fg is None else f'{fg:.2f}'} | "
                     f"{health.get('slots_in_use', float('nan')):.1f} | {_number(health.get('object_floor_share'))} | "
                     f"{_number(health.get('foreground_in_largest_slot'))} | {verdict} |")
    return "\n".join(lines)


def write_doc_table(path: Path, table: str) -> None:
    """Replace the text between the two :data:`DOC_MARKER` lines of ``path`` with ``table``."""
    text = path.read_text()
    parts = text.split(DOC_MARKER)
    if len(parts) != 3:
        raise ValueError(f"{path} must hold exactly two {DOC_MARKER!r} lines around the table")
    with atomic_path(path) as tmp:
        tmp.write_text(parts[0] + DOC_MARKER + "\n" + table + "\n" + DOC_MARKER + parts[2])


def main(argv: list[str] | None = None) -> int:
    """Entry point: user mistakes become one ``error:`` line and exit code 2."""
    return run_main(run, argv)


if __name__ == "__main__":
    sys.exit(main())

"""Pretraining: CLI, a short run's outputs, exact kill-and-resume, torchrun DDP, NaN handling, bad data."""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from psb_rl.checkpoint import load_checkpoint, read_checkpoint
from psb_rl.model import PSBAutoencoder
from psb_rl.rollouts import collect_rollouts
from psb_rl.training import (
    TRAIN_STATE_NAME,
    TrainArgs,
    TrainingDivergedError,
    learning_rate,
    mask_change,
    mask_consistency_weight,
    slot_contrast,
    temporal_weight,
    train,
)
from psb_rl.utils import child_pythonpath

ROOT = Path(__file__).resolve().parents[1]
TINY = dict(image_size=32, num_slots=4, slot_dim=32, num_blocks=1, num_heads=2, window=2,
            encoder_channels=16, decoder_channels=16, batch_size=4, clip_len=3, eval_clips=4,
            progress=False, num_gifs=1, warmup_steps=2, eval_every=0)


@pytest.fixture(scope="module")
def rollouts(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("rollouts")
    collect_rollouts("PSB/RandomObjects-v0", root, episodes=10, resize=32, max_episode_steps=14, seed=0,
                     episodes_per_shard=5, progress=False)
    return root


def tiny_args(data: Path, out: Path, **overrides) -> TrainArgs:
    fields = dict(TINY, data=str(data), out=str(out), steps=6, checkpoint_every=3, val_fraction=0.2)
    fields.update(overrides)
    return TrainArgs(**fields)


def run_script(*argv: str, timeout: int = 240, **kwargs) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": child_pythonpath(ROOT), "OMP_NUM_THREADS": "1"}
    return subprocess.run([*argv], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout, **kwargs)


def test_child_pythonpath_puts_roots_first_and_keeps_the_callers(monkeypatch) -> None:
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(["/wheels", "/more"]))
    assert child_pythonpath(ROOT, "/x") == os.pathsep.join([str(ROOT), "/x", "/wheels", "/more"])
    monkeypatch.delenv("PYTHONPATH")
    assert child_pythonpath(ROOT) == str(ROOT)


def test_cli_help_lists_the_arguments() -> None:
    result = run_script(sys.executable, "pretrain/train_psb.py", "--help")
    assert result.returncode == 0, result.stderr
    for flag in ("--data", "--out", "--steps", "--batch-size", "--clip-len", "--lr", "--seed", "--device",
                 "--resume", "--image-size", "--num-slots", "--slot-dim", "--num-blocks", "--window", "--encoder"):
        assert flag in result.stdout


def test_short_run_writes_checkpoint_metrics_and_gif(rollouts: Path, tmp_path: Path) -> None:
    result = run_script(sys.executable, "pretrain/train_psb.py",
                        *_flags(tiny_args(rollouts, tmp_path / "run", eval_every=3)))
    assert result.returncode == 0, result.stderr[-2000:]
    run = tmp_path / "run"
    model = load_checkpoint(run / "psb.ckpt")
    assert isinstance(model, PSBAutoencoder) and model.config.num_slots == 4
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["steps"] == 6
    for length in ("1x", "2x", "4x"):
        assert 0.0 <= metrics["evaluation"][length]["fg_ari"] <= 1.0
        assert set(metrics["evaluation"][length]["object_recall"]) <= {"agent", "object"}
    # six steps do not bind: the run says so
    assert metrics["evaluation"]["1x"]["health"]["collapsed"] and "binding collapsed" in result.stderr
    assert (run / "slots_0.gif").stat().st_size > 0 and (run / "loss_curve.png").exists()
    assert any((run / "tensorboard").iterdir())
    assert "next:" in result.stdout and str(run / "psb.ckpt") in result.stdout


def test_evaluate_reports_health_and_recall_with_and_without_masks(rollouts: Path, tmp_path: Path) -> None:
    from psb_rl.checkpoint import save_checkpoint

    checkpoint = tmp_path / "psb.ckpt"
    torch.manual_seed(0)
    save_checkpoint(PSBAutoencoder(tiny_args(rollouts, tmp_path).model_config()), checkpoint)
    no_masks = tmp_path / "no_masks"
    collect_rollouts("PSB/RandomObjects-v0", no_masks, episodes=3, resize=32, max_episode_steps=8, seed=1,
                     progress=False, masks=False)
    for data, has_masks in ((rollouts, True), (no_masks, False)):
        out = tmp_path / f"eval_{has_masks}.json"
        result = run_script(sys.executable, "pretrain/evaluate.py", "--checkpoint", str(checkpoint), "--data",
                            str(data), "--split", "all", "--clip-len", "3", "--clips", "4", "--multipliers", "1",
                            "--out", str(out))
        assert result.returncode == 0, result.stderr[-2000:]
        report = json.loads(out.read_text())
        health = report["health"]
        assert health == report["results"]["1x"]["health"] and health["num_slots"] == 4
        assert health["collapsed"] and "binding collapsed" in result.stderr  # an untrained model
        assert "1x health:" in result.stdout and "COLLAPSED" in result.stdout
        if has_masks:
            assert set(report["object_recall"]) == {"agent", "object"} and "object recall" in result.stdout
            assert 0.0 <= report["results"]["1x"]["fg_ari"] <= 1.0
        else:
            assert report["object_recall"] is None and "fg_ari" not in report["results"]["1x"]


def _flags(args: TrainArgs) -> list[str]:
    flags = []
    for key, value in vars(args).items():
        flag = "--" + key.replace("_", "-")
        if isinstance(value, bool):
            flags.append(flag if value else "--no-" + key.replace("_", "-"))
        elif isinstance(value, list | tuple):  # nargs flags: one value per argument
            flags += [flag, *map(str, value)] if value else []
        elif value is not None:
            flags += [flag, str(value)]
    return flags


def test_learning_rate_warms_up_decays_and_follows_the_time_budget() -> None:
    args = TrainArgs(lr=1e-3, steps=100, warmup_steps=10)
    assert learning_rate(0, args) == pytest.approx(1e-4)
    assert learning_rate(9, args) == pytest.approx(1e-3)
    assert learning_rate(55, args) == pytest.approx(0.55e-3)  # half-way through the cosine
    assert learning_rate(100, args) == pytest.approx(1e-4)
    # With a time budget the decay follows whichever of steps and time is further along.
    assert learning_rate(10, args, time_fraction=0.5) == pytest.approx(0.55e-3)
    assert learning_rate(55, args, time_fraction=0.01) == pytest.approx(0.55e-3)
    assert learning_rate(12, args, time_fraction=1.5) == pytest.approx(1e-4)
    assert learning_rate(0, args, time_fraction=0.9) == pytest.approx(1e-4)  # the warm-up counts steps


def test_mask_change_counts_pixels_that_change_slot_where_the_image_is_still() -> None:
    """Hand-computed on 4×4 frames with a black background, a red object A (slot 1) and a green object B
    (slot 2), each 2×2: a still scene costs 0; A moving one column right hands 2 pixels to the background
    and takes 2 from it (4/16 without the image, 0 with it: those pixels change colour); A and B swapping
    slots in place costs their 8 pixels (8/16) either way."""
    masks = torch.zeros(1, 2, 3, 4, 4)
    masks[:, :, 0] = 1.0
    masks[:, :, 0, :2, :2], masks[:, :, 1, :2, :2] = 0.0, 1.0
    masks[:, :, 0, 2:, 2:], masks[:, :, 2, 2:, 2:] = 0.0, 1.0
    colours = torch.tensor([[0.0, 0.0, 0.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

    def render(m: torch.Tensor) -> torch.Tensor:  # (1, T, N, H, W) one-hot masks -> (1, T, 3, H, W)
        return torch.einsum("btnhw,nc->btchw", m, colours)

    assert mask_change(masks).item() == 0.0 and mask_change(masks, render(masks)).item() == 0.0
    moved = masks.clone()
    moved[0, 1, :, :2, :] = torch.tensor([1.0, 0.0, 0.0])[:, None, None]
    moved[0, 1, 1, :2, 1:3], moved[0, 1, 0, :2, 1:3] = 1.0, 0.0
    assert mask_change(moved).item() == pytest.approx(4 / 16)
    assert mask_change(moved, render(moved)).item() == 0.0
    swapped = masks.clone()
    swapped[0, 1, [1, 2]] = swapped[0, 1, [2, 1]]
    assert mask_change(swapped).item() == pytest.approx(8 / 16)
    assert mask_change(swapped, render(masks)).item() == pytest.approx(8 / 16)  # the image did not change
    assert mask_change(masks[:, :1]).item() == 0.0  # one frame: nothing to compare


def test_mask_consistency_weight_starts_late_and_ramps() -> None:
    args = TrainArgs(mask_consistency=0.1, mask_consistency_start=500)
    assert [mask_consistency_weight(s, args) for s in (0, 499, 500)] == [0.0, 0.0, 0.0]
    assert mask_consistency_weight(750, args) == pytest.approx(0.05)
    assert mask_consistency_weight(1000, args) == mask_consistency_weight(5000, args) == pytest.approx(0.1)
    assert mask_consistency_weight(0, TrainArgs(mask_consistency=0.1, mask_consistency_start=0)) == 0.1


def test_slot_contrast_rewards_slots_that_keep_their_identity() -> None:
    """Hand-computed with B·N = 6 orthonormal slots (cosine 1 with itself, 0 with the others):
    unchanged slots cost log(1 + 5·e^(-1/τ)) per row; two slots of one clip swapped at t+1 cost
    log(e^(1/τ) + 5) for each of those two rows (their target scores 0); identical slots carry no
    identity: log(6)."""
    temperature = 0.1
    basis = torch.eye(6, 16).view(2, 1, 3, 16)  # B = 2 clips, N = 3 slots
    kept = basis.expand(2, 4, 3, 16)  # T = 4, nothing changes
    assert slot_contrast(kept, temperature).item() == pytest.approx(math.log(1 + 5 * math.exp(-10)), abs=1e-6)
    swapped = kept.clone()
    swapped[0, 2:, [0, 1]] = swapped[0, 2:, [1, 0]]  # clip 0 swaps slots 0 and 1 from t = 2 on
    # One of the three step pairs has two swapped rows out of six.
    expected = (2 * math.log(math.exp(10) + 5) + 4 * math.log(1 + 5 * math.exp(-10))) / 6 / 3
    expected += 2 / 3 * math.log(1 + 5 * math.exp(-10))
    assert slot_contrast(swapped, temperature).item() == pytest.approx(expected, rel=1e-5)
    same = torch.ones(2, 4, 3, 16)
    assert slot_contrast(same, temperature).item() == pytest.approx(math.log(6), rel=1e-5)
    assert slot_contrast(kept[:, :1], temperature).item() == 0.0  # one frame: nothing to compare
    assert slot_contrast(kept * 7.0, temperature).item() == pytest.approx(slot_contrast(kept, temperature).item())


def test_temporal_terms_share_the_late_start(rollouts: Path, tmp_path: Path) -> None:
    args = TrainArgs(slot_contrast=0.01, mask_consistency_start=500)
    assert [temporal_weight(s, 0.01, args) for s in (0, 500, 750, 1000)] == pytest.approx([0, 0, 0.005, 0.01])
    for bad in (dict(slot_contrast=-0.1), dict(mask_consistency=-1.0), dict(contrast_temperature=0.0)):
        with pytest.raises(ValueError, match="must be"):
            train(tiny_args(rollouts, tmp_path / "bad", **bad))
    assert not (tmp_path / "bad").exists()  # rejected before anything is written
    summary = train(tiny_args(rollouts, tmp_path / "contrast", slot_contrast=0.5, mask_consistency_start=0))
    history = torch.load(tmp_path / "contrast" / TRAIN_STATE_NAME, weights_only=True)["history"]
    records = json.loads(history)
    assert all(r["loss"] == pytest.approx(r["mse"] + 0.5 * r["slot_contrast"], rel=1e-4) for r in records)
    assert summary["steps"] == 6


CUDA = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")


@pytest.mark.parametrize("device", ["cpu", pytest.param("cuda", marks=CUDA)])
def test_killed_and_resumed_run_matches_uninterrupted(rollouts: Path, tmp_path: Path, monkeypatch,
                                                      device: str) -> None:
    reference = tiny_args(rollouts, tmp_path / "straight", device=device)
    train(reference)

    import psb_rl.training as training

    original = training.learning_rate

    def crash_at_step_4(step: int, args: TrainArgs, time_fraction: float = 0.0) -> float:
        if step == 4:
            raise KeyboardInterrupt("simulated kill after the step-3 checkpoint")
        return original(step, args, time_fraction)

    monkeypatch.setattr(training, "learning_rate", crash_at_step_4)
    interrupted = tiny_args(rollouts, tmp_path / "resumed", device=device)
    with pytest.raises(KeyboardInterrupt):
        train(interrupted)
    state = torch.load(tmp_path / "resumed" / TRAIN_STATE_NAME, weights_only=True)
    assert state["step"] == 3
    monkeypatch.setattr(training, "learning_rate", original)
    interrupted.resume = True
    train(interrupted)

    straight, _ = read_checkpoint(tmp_path / "straight" / "psb.ckpt")
    resumed, _ = read_checkpoint(tmp_path / "resumed" / "psb.ckpt")
    assert straight.keys() == resumed.keys()
    for name in straight:
        if device == "cpu":  # resuming on CPU is bit-identical to an uninterrupted run
            assert torch.equal(straight[name], resumed[name]), name
        else:  # CUDA kernels (cuDNN convolutions, atomics) may sum in another order
            torch.testing.assert_close(straight[name], resumed[name], rtol=1e-4, atol=1e-5, msg=name)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(rollouts: Path, tmp_path: Path, monkeypatch) -> None:
    import psb_rl.training as training

    calls = {"n": 0}

    class PoisonedModel(PSBAutoencoder):
        def forward(self, video):
            out = super().forward(video)
            calls["n"] += 1
            if calls["n"] == 5:
                out.loss = out.loss * float("nan")
            return out

    monkeypatch.setattr(training, "PSBAutoencoder", PoisonedModel)
    with pytest.raises(TrainingDivergedError, match="last good checkpoint"):
        train(tiny_args(rollouts, tmp_path / "nan", checkpoint_every=2))
    _, info = read_checkpoint(tmp_path / "nan" / "psb.ckpt")
    assert info["extra"]["step"] == 4
    assert torch.load(tmp_path / "nan" / TRAIN_STATE_NAME, weights_only=True)["step"] == 4


def test_missing_data_directory_is_explained(tmp_path: Path) -> None:
    args = tiny_args(tmp_path / "empty", tmp_path / "run", collect_episodes=0)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="collect_rollouts"):
        train(args)


def test_torchrun_two_processes(rollouts: Path, tmp_path: Path) -> None:
    args = tiny_args(rollouts, tmp_path / "ddp", steps=4, checkpoint_every=2)
    result = run_script(sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                        "pretrain/train_psb.py", *_flags(args), "--device", "cpu")
    assert result.returncode == 0, result.stderr[-3000:]
    metrics = json.loads((tmp_path / "ddp" / "metrics.json").read_text())
    assert metrics["steps"] == 4
    assert metrics["args"]["batch_size"] == 4
    assert load_checkpoint(tmp_path / "ddp" / "psb.ckpt").config.window == 2


def _one_error_line(result: subprocess.CompletedProcess) -> str:
    """The single ``error:`` line a CLI prints for a user mistake (exit code 2, no traceback)."""
    assert result.returncode == 2, (result.returncode, result.stderr[-2000:])
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in result.stderr, result.stderr
    return lines[0]


def test_a_finished_run_is_not_replaced_without_resume_or_overwrite(rollouts: Path, tmp_path: Path) -> None:
    from psb_rl.utils import RunDirError

    out = tmp_path / "run"
    train(tiny_args(rollouts, out, steps=4, checkpoint_every=2))
    before = (out / "psb.ckpt").read_bytes()
    with pytest.raises(RunDirError, match=r"already holds a run.*--resume.*--overwrite"):
        train(tiny_args(rollouts, out, steps=2))
    assert (out / "psb.ckpt").read_bytes() == before, "the finished run was touched"
    line = _one_error_line(run_script(sys.executable, "pretrain/train_psb.py", *_flags(tiny_args(rollouts, out, steps=2))))
    assert "--overwrite" in line and (out / "psb.ckpt").read_bytes() == before
    train(tiny_args(rollouts, out, steps=2, checkpoint_every=2, overwrite=True))
    assert read_checkpoint(out / "psb.ckpt")[1]["extra"]["step"] == 2
    assert not (out / ".lock").exists()


def test_a_second_writer_is_refused_and_a_stale_lock_taken_over(rollouts: Path, tmp_path: Path) -> None:
    from psb_rl.utils import LOCK_NAME, RunDirError, run_lock

    out = tmp_path / "run"
    with run_lock(out), pytest.raises(RunDirError, match=rf"in use by another run \(pid {os.getpid()} on host"):
        train(tiny_args(rollouts, out))
    assert not (out / "psb.ckpt").exists()
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    import socket

    (out / LOCK_NAME).write_text(json.dumps({"pid": int(gone.stdout), "host": socket.gethostname()}))
    summary = train(tiny_args(rollouts, out, steps=2, checkpoint_every=2))  # its process is gone: taken over
    assert summary["steps"] == 2 and not (out / LOCK_NAME).exists()


def test_resume_with_other_settings_or_data_names_them(rollouts: Path, tmp_path: Path) -> None:
    from psb_rl.utils import RunDirError

    out = tmp_path / "run"
    train(tiny_args(rollouts, out, steps=2, checkpoint_every=2))
    _, info = read_checkpoint(out / "psb.ckpt")
    manifest_sha = info["extra"]["data"]["manifest_sha256"]
    from psb_rl.rollouts import sha256_file

    assert manifest_sha == sha256_file(rollouts / "manifest.json")
    assert info["extra"]["data"]["env_id"] == "PSB/RandomObjects-v0"
    with pytest.raises(RunDirError, match="--slot-dim 64 differs from the run's 32"):
        train(tiny_args(rollouts, out, steps=4, slot_dim=64, resume=True))
    line = _one_error_line(run_script(sys.executable, "pretrain/train_psb.py",
                                      *_flags(tiny_args(rollouts, out, steps=4, slot_dim=64, resume=True))))
    assert "--slot-dim 64 differs from the run's 32" in line
    other = tmp_path / "other"
    collect_rollouts("PSB/RandomObjects-v0", other, episodes=4, resize=32, max_episode_steps=14, seed=1,
                     progress=False)
    with pytest.raises(RunDirError, match=rf"{other}.*not the data the run was trained on.*{rollouts}"):
        train(tiny_args(other, out, steps=4, resume=True))


def test_output_problems_are_found_before_any_work(rollouts: Path, tmp_path: Path,
                                                  capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "file").write_text("")
    line = _one_error_line(run_script(sys.executable, "pretrain/train_psb.py",
                                      *_flags(tiny_args(rollouts, tmp_path / "file"))))
    assert "is an existing file" in line
    import importlib.util

    spec = importlib.util.spec_from_file_location("train_psb_script", ROOT / "pretrain" / "train_psb.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    for argv, expected in ((["--slot-dim", "many"], "--slot-dim"), (["--encoder", "slotz"], "'psb', 'savi'")):
        with pytest.raises(SystemExit) as exit_info:
            script.main(argv)
        err = capsys.readouterr().err
        assert exit_info.value.code == 2 and err.count("\n") == 1 and err.startswith("error: ") and expected in err


def test_resume_keeps_the_training_time_and_purges_replayed_tensorboard_steps(rollouts: Path, tmp_path: Path,
                                                                             monkeypatch) -> None:
    import psb_rl.training as training

    original = training.learning_rate

    def crash_at_step_5(step: int, args: TrainArgs, time_fraction: float = 0.0) -> float:
        if step == 5:  # steps 4 and 5 are logged, the last checkpoint is step 3
            raise KeyboardInterrupt
        return original(step, args, time_fraction)

    monkeypatch.setattr(training, "learning_rate", crash_at_step_5)
    args = tiny_args(rollouts, tmp_path / "run")
    with pytest.raises(KeyboardInterrupt):
        train(args)
    first = torch.load(tmp_path / "run" / TRAIN_STATE_NAME, weights_only=True)
    assert first["step"] == 3 and first["train_seconds"] > 0
    monkeypatch.setattr(training, "learning_rate", original)
    started = time.perf_counter()
    summary = train(tiny_args(rollouts, tmp_path / "run", resume=True))
    resumed_wall = time.perf_counter() - started
    assert summary["train_seconds"] > first["train_seconds"]
    assert summary["train_seconds"] < first["train_seconds"] + resumed_wall
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_seconds"] == pytest.approx(summary["train_seconds"])

    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    # The log holds steps 1-5 from the first part and 4-6 from the resumed one; the resumed writer starts with a
    # restart marker at step 4, on which TensorBoard drops the first part's steps >= 4 (no step is shown twice).
    events = [event for path in sorted((tmp_path / "run" / "tensorboard").iterdir())
              for event in EventFileLoader(str(path)).Load()]
    restarts = [i for i, event in enumerate(events)
                if event.HasField("session_log") and event.session_log.status == event.session_log.START]
    assert [events[i].step for i in restarts] == [4]

    def loss_steps(part: list) -> list[int]:
        return [e.step for e in part if e.HasField("summary") and e.summary.value[0].tag == "train/loss"]

    assert loss_steps(events[: restarts[0]]) == [1, 2, 3, 4, 5]
    assert loss_steps(events[restarts[0]:]) == [4, 5, 6]


def test_extra_data_adds_training_clips_and_is_recorded(rollouts: Path, tmp_path: Path) -> None:
    from psb_rl.data import RolloutDataset
    from psb_rl.training import extra_training_data

    extra = tmp_path / "agent_rollouts"
    collect_rollouts("PSB/RandomObjects-v0", extra, episodes=3, resize=32, max_episode_steps=14, seed=5,
                     progress=False)
    args = tiny_args(rollouts, tmp_path / "run", extra_data=[str(extra)])
    manifest = RolloutDataset(rollouts, clip_len=args.clip_len).manifest
    (extra_set,) = extra_training_data(args, manifest)
    assert len(extra_set) == len(RolloutDataset(extra, clip_len=args.clip_len, split="all"))  # all its episodes
    summary = train(args)
    record = read_checkpoint(summary["checkpoint"])[1]["extra"]["data"]
    assert [e["path"] for e in record["extra"]] == [str(extra)] and record["path"] == str(rollouts)
    other = tmp_path / "other_size"
    collect_rollouts("PSB/RandomObjects-v0", other, episodes=2, resize=24, max_episode_steps=8, seed=1, progress=False)
    with pytest.raises(ValueError, match="frame_shape"):
        extra_training_data(tiny_args(rollouts, tmp_path / "run2", extra_data=[str(other)]), manifest)


@pytest.mark.parametrize("damage", ["truncated", "pickle", "foreign tensors"])
def test_a_damaged_train_state_is_one_error_line(rollouts: Path, tmp_path: Path, damage: str) -> None:
    import pickle

    from psb_rl.utils import RunDirError

    out = tmp_path / "run"
    train(tiny_args(rollouts, out, steps=2, checkpoint_every=2))
    state = out / "train_state.pt"
    if damage == "truncated":
        state.write_bytes(state.read_bytes()[: state.stat().st_size // 2])
    elif damage == "pickle":
        torch.save({"step": 1, "payload": pickle.dumps(object)}, state)
        state.write_bytes(pickle.dumps({"step": 1, "model": object()}))  # a raw pickle, not tensors
    else:
        torch.save({key: torch.zeros(2) for key in ("step", "model", "optimizer", "torch_rng", "cuda_rng")}
                   | {"args": "{}", "history": "[]"}, state)
    before = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    with pytest.raises(RunDirError, match=r"train_state\.pt is damaged or not a training state.*--overwrite"):
        train(tiny_args(rollouts, out, steps=4, checkpoint_every=2, resume=True))
    line = _one_error_line(run_script(sys.executable, "pretrain/train_psb.py",
                                      *_flags(tiny_args(rollouts, out, steps=4, checkpoint_every=2, resume=True))))
    assert "weights_only" not in line and "train_state.pt" in line
    assert {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()} == before


def test_evaluation_without_results_keeps_an_earlier_metrics_file(rollouts: Path, tmp_path: Path) -> None:
    from psb_rl.checkpoint import save_checkpoint

    checkpoint = save_checkpoint(PSBAutoencoder(tiny_args(rollouts, tmp_path).model_config()), tmp_path / "psb.ckpt")
    earlier = tmp_path / "metrics_eval.json"
    earlier.write_text('{"results": "earlier"}')
    line = _one_error_line(run_script(sys.executable, "pretrain/evaluate.py", "--checkpoint", str(checkpoint),
                                      "--data", str(rollouts), "--clip-len", "6", "--multipliers", "4", "--clips", "1",
                                      "--device", "cpu"))  # no held-out episode holds 24 frames
    assert "--clip-len 6" in line and earlier.read_text() == '{"results": "earlier"}'


def test_motion_alignment_is_a_logged_term_that_needs_a_background_slot(rollouts: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="--motion-alignment needs --background-slot"):
        train(tiny_args(rollouts, tmp_path / "bad", motion_alignment=1.0))
    assert not (tmp_path / "bad").exists()
    train(tiny_args(rollouts, tmp_path / "motion", background_slot=True, motion_alignment=1.0, steps=3,
                    checkpoint_every=3))
    records = json.loads(torch.load(tmp_path / "motion" / TRAIN_STATE_NAME, weights_only=True)["history"])
    # RandomObjects' agent moves, so some steps see moving pixels; the term is 0 only where none moved
    assert all(r["motion_alignment"] >= 0.0 for r in records) and any(r["motion_alignment"] > 0 for r in records)


def test_fixed_background_keeps_the_median_and_a_learned_one_moves(rollouts: Path, tmp_path: Path) -> None:
    from psb_rl import load_checkpoint
    from psb_rl.background import median_background
    from psb_rl.data import RolloutDataset

    with pytest.raises(ValueError, match="--fixed-background needs --background-slot"):
        train(tiny_args(rollouts, tmp_path / "bad", fixed_background=True))
    images = {}
    for fixed in (True, False):
        out = tmp_path / f"fixed_{fixed}"
        train(tiny_args(rollouts, out, background_slot=True, fixed_background=fixed, steps=3, lr=0.05, warmup_steps=0))
        images[fixed] = load_checkpoint(out / "psb.ckpt").decoder.background.detach()
    args = tiny_args(rollouts, tmp_path / "x")
    train_set = RolloutDataset(rollouts, clip_len=args.clip_len, split="train", val_fraction=args.val_fraction)
    median = median_background(train_set, args.model_config().image_size, seed=args.seed)
    assert torch.equal(images[True], median)
    assert (images[False] - median).abs().max() > 1e-3

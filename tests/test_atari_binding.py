"""Tests of benchmarks/atari_binding.py at a budget of seconds (OCAtari gives the ground truth)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from benchmarks.atari_binding import DOC_MARKER, main  # noqa: E402

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def tiny(tmp_path: Path, *extra: str) -> list[str]:
    return ["--games", "ALE/Pong-v5", "--recipes", "static", "--minutes", "0.005", "--steps", "1", "--episodes", "3",
            "--max-episode-steps", "12", "--eval-clips", "2", "--data", str(tmp_path / "data"),
            "--out", str(tmp_path / "runs"), "--results", str(tmp_path / "atari.json"), *extra]


def test_rows_png_doc_table_and_reuse(tmp_path: Path, capsys: pytest.CaptureFixture[str],
                                      monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("ocatari")
    pytest.importorskip("ale_py")
    doc = tmp_path / "doc.md"
    doc.write_text(f"# Atari\n\n{DOC_MARKER}\nold table\n{DOC_MARKER}\n\nafter\n")
    assert main(tiny(tmp_path, "--doc", str(doc))) == 0
    rows = json.loads((tmp_path / "atari.json").read_text())
    assert [(r["game"], r["recipe"], r["seed"]) for r in rows] == [("ALE/Pong-v5", "static", 0),
                                                                    ("ALE/Pong-v5", "random_init", 0)]
    trained, control = rows
    assert trained["steps"] == 1 and control["steps"] == 0 and trained["budget_minutes"] == 0.005
    for row in rows:
        assert row["ground_truth"] == "ocatari" and row["crop"] == [34, 16, 0, 0]
        assert row["commit"] and row["date"] and "CPU" in row["machine"]  # every row says what made it
        # OCAtari's categories of Pong that the few held-out frames show (the ball waits for the serve)
        assert "Player" in row["object_recall"] and set(row["object_recall"]) <= {"Player", "Ball", "Enemy"}
        assert all(0.0 <= v <= 1.0 for v in row["object_recall"].values()) and -1.0 <= row["fg_ari"] <= 1.0
        assert {"slots_in_use", "object_floor_share", "collapsed"} <= set(row["health"])
        assert Path(row["slot_png"]).stat().st_size > 0
    manifest = json.loads((tmp_path / "data" / "ale-pong-v5" / "manifest.json").read_text())
    assert manifest["crop"] == [34, 16, 0, 0] and manifest["frame_shape"] == [64, 64, 3] and manifest["has_masks"]
    text = doc.read_text()
    assert "old table" not in text and text.endswith("after\n") and "| ALE/Pong-v5 | static | 0 | 1 |" in text
    assert "| ALE/Pong-v5 | static |" in capsys.readouterr().out

    # a rerun reuses every finished row: nothing is trained or scored again
    import benchmarks.atari_binding as bench

    monkeypatch.setattr(bench, "measure", lambda *a, **k: pytest.fail("a finished row was measured again"))
    assert main(tiny(tmp_path)) == 0
    assert json.loads((tmp_path / "atari.json").read_text()) == rows
    # --rescore scores the finished rows again without training; rows never measured stay unmeasured
    monkeypatch.undo()
    monkeypatch.setattr("psb_rl.training.train", lambda *a, **k: pytest.fail("--rescore trained a model"))
    assert main(tiny(tmp_path, "--rescore", "--recipes", "static", "motion")) == 0
    rescored = json.loads((tmp_path / "atari.json").read_text())
    assert [(r["recipe"], r["trained_commit"]) for r in rescored] == [(r["recipe"], r["commit"]) for r in rows]
    assert [r["object_recall"] for r in rescored] == [r["object_recall"] for r in rows]  # the same models
    # another budget is another measurement; the run directory of the first is left alone
    monkeypatch.undo()
    assert main(tiny(tmp_path, "--minutes", "0.004", "--recipes", "static", "--out", str(tmp_path / "runs2"))) == 0
    assert [r["budget_minutes"] for r in json.loads((tmp_path / "atari.json").read_text())] == [0.005] * 2 + [0.004] * 2


@pytest.mark.parametrize("argv, message", [
    (["--games", "ALE/Breakout-v5"], "unknown games ['ALE/Breakout-v5']"),
    (["--recipes", "magic"], "unknown games [] / recipes ['magic']"),
    (["--minutes", "0"], "--minutes"),
])
def test_bad_arguments_are_one_error_line(argv: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    try:
        code = main(argv)
    except SystemExit as exit_info:  # the parser's own mistakes (a bound) exit as argparse does
        code = exit_info.code
    assert code == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("error:") and message in err[0]


def test_runs_as_a_script_from_the_repository_root() -> None:
    import subprocess

    done = subprocess.run([sys.executable, "benchmarks/atari_binding.py", "--help"], cwd=ROOT, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0 and "--rescore" in done.stdout, done.stderr


def test_a_results_file_that_is_not_a_list_is_one_error_line(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    pytest.importorskip("ocatari")
    (tmp_path / "atari.json").write_text('{"rows": []}')
    assert main(tiny(tmp_path)) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "does not hold a list of rows" in err[0]

"""A fast seeded slice of the fuzz harness (benchmarks/fuzz.py): malformed frames, checkpoints, training states,
rollout and run directories and command lines each end in success or one clear error, and no input file is lost."""

from __future__ import annotations

import pytest

from benchmarks import fuzz

pytestmark = pytest.mark.usefixtures("one_torch_thread")  # conftest.py


def test_a_seeded_slice_of_every_entry_point_passes(tmp_path) -> None:
    results = fuzz.run_cases(360, seed=20261207, workdir=tmp_path)
    covered = {name for name, row in results["by_entry_point"].items() if row["cases"]}
    assert covered == set(fuzz.ENTRY_POINTS)
    assert not results["failures"], "\n".join(f"[{f['entry_point']}] {f['case']}: {f['problem']}"
                                              for f in results["failures"][:10])


def test_the_harness_finds_what_it_must() -> None:
    """A success where an error was due, a traceback, and a changed input file are each reported."""
    import numpy as np

    ok = fuzz.Case("demo", "silent", lambda: np.zeros(3), expect="error")
    assert "silent wrong result" in fuzz.run_case(ok)

    def bug() -> None:
        raise KeyError("internal")

    assert "not a user error" in fuzz.run_case(fuzz.Case("demo", "bug", bug))
    assert fuzz.run_case(fuzz.Case("demo", "cli", lambda: (2, "error: one line\n"), cli=True)) is None
    assert "traceback" in fuzz.run_case(fuzz.Case("demo", "cli", lambda: (1, "Traceback (most recent call last)\n"),
                                                  cli=True))


def test_lost_input_files_are_reported(tmp_path) -> None:
    victim = tmp_path / "shard-00000.npz"
    victim.write_bytes(b"data")
    case = fuzz.Case("demo", "deletes", victim.unlink, inputs=[tmp_path])
    assert "input files changed or lost" in fuzz.run_case(case)

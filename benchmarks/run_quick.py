"""`make bench`: the quick version of every benchmark, one after another (they must not share cores).

Each benchmark prints its table and writes JSON under benchmarks/results/. Full versions: run each
script without --quick (docs/speed.md has the exact commands).
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

QUICK = [
    ["benchmarks/env_speed.py", "--steps", "5000"],
    ["benchmarks/streaming_speed.py", "--quick"],
    ["benchmarks/train_speed.py", "--quick"],
    ["benchmarks/vec_wrapper_speed.py", "--repeats", "3"],
    ["benchmarks/long_episode.py", "--quick"],
    ["benchmarks/fuzz.py", "--cases", "500", "--out", "benchmarks/results/fuzz_quick.json"],
    ["benchmarks/quality.py", "--minutes", "2", "--variants", "psb", "savi", "--out", "runs/quality_quick",
     "--results", "benchmarks/results/quality_quick.json"],
]


def main() -> int:
    failed = []
    for command in QUICK:
        print(f"\n$ python {' '.join(command)}", flush=True)
        if subprocess.run([sys.executable, *command], cwd=ROOT).returncode != 0:
            failed.append(command[0])
    if failed:
        print(f"failed: {failed}")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

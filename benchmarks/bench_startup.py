"""Start-up of the command-line tools: --version, --help, and the time to the demo's first figure.

    python benchmarks/bench_startup.py            # 5 rounds
    python benchmarks/bench_startup.py --rounds 9

Each command runs as a fresh process (as a user types it), interleaved round by
round; the median wall time per command is printed, and each command's ratio
to a bare ``python -c pass`` (the interpreter's own start-up). Run it on a quiet
machine: other processes on the same cores inflate every figure.
"""
from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def commands(out: Path) -> dict:
    py = [sys.executable]
    return {
        "python -c pass": [*py, "-c", "pass"],
        "glmix-viz --version": [*py, "-m", "glmix_viz.cli", "--version"],
        "glmix-viz --help": [*py, "-m", "glmix_viz.cli", "--help"],
        "glmix-wsss --help": [*py, "-m", "wsss.cli", "--help"],
        "glmix-wsss pseudo-labels --help": [*py, "-m", "wsss.cli", "pseudo-labels", "--help"],
        "import glmix_viz, timm (registered)": [*py, "-c",
                                                "import glmix_viz, timm; timm.create_model('test_glnet')"],
        "glmix-viz --demo (first figure)": [*py, "-m", "glmix_viz.cli", "--demo", "-q", "--out", str(out)],
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    times: dict = {}
    with tempfile.TemporaryDirectory() as tmp:
        cmds = commands(Path(tmp) / "demo")
        for _ in range(args.rounds):
            for name, cmd in cmds.items():
                t0 = time.perf_counter()
                subprocess.run(cmd, cwd=ROOT, check=True, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
                times.setdefault(name, []).append(time.perf_counter() - t0)
    base = statistics.median(times["python -c pass"])
    print(f"{'command':40s} {'median s':>9s} {'min s':>7s} {'x python':>9s}")
    for name, ts in times.items():
        print(f"{name:40s} {statistics.median(ts):9.3f} {min(ts):7.3f} {statistics.median(ts) / base:9.1f}")


if __name__ == "__main__":
    main()

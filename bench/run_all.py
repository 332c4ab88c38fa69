"""Run every bench/bench_*.py in turn and print its output (``make bench``); exit non-zero if any failed."""

from __future__ import annotations

import subprocess
import sys
import time
from pathlib import Path


def main() -> int:
    here = Path(__file__).resolve().parent
    failed = []
    for script in sorted(here.glob("bench_*.py")):
        print(f"== {script.name}", flush=True)
        t0 = time.perf_counter()
        rc = subprocess.run([sys.executable, str(script)], check=False).returncode
        print(f"== {script.name}: exit {rc} after {time.perf_counter() - t0:.0f}s\n", flush=True)
        if rc:
            failed.append(script.name)
    if failed:
        print("failed: " + ", ".join(failed))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())

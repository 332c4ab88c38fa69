"""The trainer under an address-space limit (RLIMIT_AS, a real allocator failure, not a simulated one), as a
pod under a memory limit: ``python oom_child.py RUN_CONFIG LIMIT_BYTES MAX_STEPS``. Prints the process's
peak virtual size (``VmPeak``) last, to calibrate the limit."""

from __future__ import annotations

import resource
import sys

from eft_api.contract import RunConfig
from eft_cli.run import run_config


def status_kb(key: str) -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    return 0


if __name__ == "__main__":
    cfg_path, limit, max_steps = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
    if limit:
        resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
    with open(cfg_path) as f:
        cfg = RunConfig.from_json(f.read())
    code, _ = run_config(cfg, max_steps=max_steps)
    print(f"VmPeak {status_kb('VmPeak')} kB, VmHWM {status_kb('VmHWM')} kB", file=sys.stderr)
    sys.exit(code)

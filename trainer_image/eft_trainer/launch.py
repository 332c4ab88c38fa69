"""``eft-trainer torchrun ARGS...``: run ``torchrun ARGS...`` and exit with the trainer's exit code.

torchrun exits 1 whenever a worker fails, whatever the worker's exit code; the Job's podFailurePolicy
needs the trainer's own codes (bad input, promotion rejected, out of memory: fail at once; anything else:
retry). Rank 0 writes the termination message before it exits, so the launcher reads the outcome back from
it and exits with that outcome's code. A pod without rank 0 (another node of a multi-node run) has no
termination message and exits with torchrun's code. SIGTERM and SIGINT are passed on to torchrun, which
passes them on to its workers (they checkpoint and stop: see ``hf_trainer.StopOnSigterm``).
"""

from __future__ import annotations

import logging
import os
import signal
import subprocess
import sys
from pathlib import Path
from types import FrameType

from eft_api.contract import TERMINATION_LOG, TERMINATION_LOG_ENV, TerminationMessage
from eft_trainer.stages.outcome import exit_code

log = logging.getLogger(__name__)


def exit_code_after(torchrun_code: int, termination_text: str | None) -> int:
    """The launcher's exit code: the outcome rank 0 wrote, else torchrun's. Pure."""
    if torchrun_code == 0:
        return 0
    msg = TerminationMessage.parse(termination_text)
    return exit_code(msg) if msg is not None else torchrun_code


def launch(torchrun_args: list[str]) -> int:
    path = Path(os.environ.get(TERMINATION_LOG_ENV, TERMINATION_LOG))
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", *torchrun_args])

    def forward(signum: int, frame: FrameType | None) -> None:
        proc.send_signal(signum)

    previous = {s: signal.signal(s, forward) for s in (signal.SIGTERM, signal.SIGINT)}
    try:
        code = proc.wait()
    finally:
        for s, h in previous.items():
            signal.signal(s, h)
    try:
        text = path.read_text() if path.is_file() else None
    except OSError:
        text = None
    final = exit_code_after(code, text)
    if final != code:
        log.info("torchrun exited %d; the trainer's outcome is exit code %d", code, final)
    return final

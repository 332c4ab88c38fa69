"""A torchrun worker for the tests: the trainer, but the rank named by EFT_TEST_KILL_RANK dies by SIGKILL at
the end of step EFT_TEST_KILL_STEP (a pod's process OOM-killed or its node lost, mid-run)."""

from __future__ import annotations

import os
import signal
import sys
from typing import Any

from transformers import TrainerCallback

from eft_trainer.entrypoint import main


class KillAt(TrainerCallback):  # type: ignore[misc]
    def __init__(self, step: int) -> None:
        self.step = step

    def on_step_end(self, args: Any, state: Any, control: Any, **kw: Any) -> None:
        if state.global_step == self.step:
            os.kill(os.getpid(), signal.SIGKILL)


if __name__ == "__main__":
    kill = os.environ.get("RANK") == os.environ.get("EFT_TEST_KILL_RANK")
    sys.exit(main([], callbacks=[KillAt(int(os.environ["EFT_TEST_KILL_STEP"]))] if kill else []))

"""``python -m eft_trainer``: the trainer container's command (same as the ``eft-trainer`` script)."""

from __future__ import annotations

import sys

from eft_trainer.entrypoint import main

if __name__ == "__main__":
    sys.exit(main())

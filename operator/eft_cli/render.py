"""``eft render``: placeholder until its issue lands (it says so plainly instead of pretending)."""

from __future__ import annotations

import argparse
import sys
from typing import Any


def add_parser(sub: Any) -> None:
    p = sub.add_parser("render", help="(not available yet)")
    p.add_argument("file", metavar="FILE")
    p.set_defaults(handler=run)


def run(args: argparse.Namespace) -> int:
    print("eft render: not implemented yet in this version", file=sys.stderr)
    return 2

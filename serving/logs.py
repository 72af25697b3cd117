"""One logging setup for every process: one line per record, with the process role and pid."""

from __future__ import annotations

import logging
import sys


def setup_logging(level: str, role: str = "engine") -> None:
    """Log to stderr at `level` (debug, info, warning, error, critical)."""
    logging.basicConfig(
        level=getattr(logging, level.upper(), logging.INFO),
        stream=sys.stderr,
        format=f"%(asctime)s %(levelname)s [{role} %(process)d] %(name)s: %(message)s",
        force=True,
    )

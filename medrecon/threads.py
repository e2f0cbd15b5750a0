"""Process-wide thread settings that must be made before torch is imported.

OpenMP (torch's CPU thread pool, and the forked interpolation of torchkbnufft) lets
idle worker threads spin for a while before they sleep (``OMP_WAIT_POLICY=ACTIVE``-like
behaviour in GNU and LLVM OpenMP). On a small or shared CPU the spinning threads take
the cores from the threads doing the work. ``PASSIVE`` makes idle workers sleep.

The OpenMP runtime reads ``OMP_WAIT_POLICY`` once, when it is loaded, which happens
when ``torch`` is first imported: call :func:`apply_thread_policy` before anything
imports torch (at the top of the command-line entry point), or it has no effect.
This module imports nothing heavy.
"""

from __future__ import annotations

import os
import sys

WAIT_POLICY = "PASSIVE"


def apply_thread_policy() -> bool:
    """Set ``OMP_WAIT_POLICY=PASSIVE`` unless the user has set ``OMP_WAIT_POLICY``.

    Returns whether it set it *and* it can still take effect (torch not yet imported).
    Child processes inherit the setting through the environment.
    """
    if "OMP_WAIT_POLICY" in os.environ:
        return False
    os.environ["OMP_WAIT_POLICY"] = WAIT_POLICY
    return "torch" not in sys.modules

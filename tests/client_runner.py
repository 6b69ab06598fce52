"""``python -m tests.client_runner SCRIPT ARGS...``: run SCRIPT as __main__ (under `tests.no_torch`)."""

from __future__ import annotations

import runpy
import sys

if __name__ == "__main__":
    script, sys.argv = sys.argv[1], sys.argv[1:]
    runpy.run_path(script, run_name="__main__")

"""Run a script under the Triton interpreter (TRITON_INTERPRET=1) in a fresh process."""

from __future__ import annotations

import json
import os
import subprocess
import sys


def interpreter_result(script: str, timeout: float) -> object:
    """Run ``script`` with TRITON_INTERPRET=1 (set before triton is imported); it must print one
    line ``RESULT<json>``. Returns the decoded JSON; fails the test on a non-zero exit."""
    env = dict(os.environ, TRITON_INTERPRET="1")
    res = subprocess.run(
        [sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=timeout
    )
    assert res.returncode == 0, res.stderr[-3000:]
    line = next(x for x in res.stdout.splitlines() if x.startswith("RESULT"))
    return json.loads(line[len("RESULT") :])

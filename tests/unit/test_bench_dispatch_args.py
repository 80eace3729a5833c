"""bench/dispatch.py's options and BENCH_* variables: a value out of range or not a number is a
usage error (exit 2, one line naming the option), before anything starts; sizes are bounded."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

BENCH = Path(__file__).resolve().parents[2] / "bench" / "dispatch.py"


@pytest.mark.parametrize("args, env, option", [
    (["--messages", "0"], {}, "--messages"),
    (["--messages", "abc"], {}, "--messages"),
    ([], {"BENCH_MESSAGES": "2000000"}, "--messages"),
    (["--workers", "100000"], {}, "--workers"),
    ([], {"BENCH_WORKERS": "-1"}, "--workers"),
    (["--latency-ms", "nan"], {}, "--latency-ms"),
    (["--steady-s", "-1"], {}, "--steady-s"),
    (["--baseline-messages", "1000001"], {}, "--baseline-messages"),
    (["--limits", "1000,0"], {}, "--limits"),
])
def test_a_bad_size_is_a_usage_error_before_anything_starts(args, env, option):
    r = subprocess.run([sys.executable, str(BENCH), *args], capture_output=True, text=True, timeout=60,
                       env={**os.environ, **env})
    assert r.returncode == 2, r.stderr
    assert f"argument {option}" in r.stderr and "Traceback" not in r.stderr

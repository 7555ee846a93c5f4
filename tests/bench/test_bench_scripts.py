"""The benchmarks start as scripts (`python bench/NAME.py`): nothing in bench/ may shadow a standard-library module
they import (bench/tokenize.py is also the name of the stdlib's tokenize)."""
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["train.py", "tokenize.py", "preprocess.py", "memory.py"])
def test_benchmark_scripts_start(script):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout

"""The benchmarks start as scripts (`python bench/NAME.py`): nothing in bench/ may shadow a standard-library module
they import (bench/tokenize.py is also the name of the stdlib's tokenize). generate.py and serve.py also run end to end
at their --quick sizes (the output's format, not the speed)."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["train.py", "tokenize.py", "preprocess.py", "memory.py", "generate.py",
                                    "serve.py", "gguf.py"])
def test_benchmark_scripts_start(script):
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--help"], capture_output=True, text=True,
                            cwd=ROOT, timeout=120)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def _quick_run(script: str) -> list[str]:
    """`python bench/SCRIPT --quick`: exits 0; its output lines."""
    result = subprocess.run([sys.executable, str(ROOT / "bench" / script), "--quick"], capture_output=True, text=True,
                            cwd=ROOT, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return result.stdout.strip().splitlines()


def _ratio(lines: list[str]) -> float:
    assert re.fullmatch(r"ratio: \d+\.\d\d", lines[-1]), lines[-1]
    ratio = float(lines[-1].split()[1])
    assert ratio > 0
    return ratio


def test_generate_benchmark_checks_the_tokens_and_ends_with_a_ratio():
    pytest.importorskip("transformers")  # the baseline (the dev extra)
    lines = _quick_run("generate.py")
    assert "same tokens: yes (greedy, batch 1, 2 prompts)" in lines
    table = lines[lines.index(next(line for line in lines if line.startswith("batch |"))):]
    assert [row.split("|")[0].strip() for row in table[1:-1]] == ["1", "4"]  # batch 1 and the --quick batch
    for row in table[1:-1]:
        ours, hf, ratio = (float(cell.replace(",", "")) for cell in row.split("|")[1:])
        assert ours > 0 and hf > 0 and ratio > 0
    _ratio(lines)


def test_gguf_benchmark_checks_the_tokens_reports_each_quant_and_ends_with_a_ratio():
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (`make llama` builds it)")
    lines = _quick_run("gguf.py")
    assert "same tokens: yes (greedy, f32 file, 16 tokens)" in lines
    sizes = {row.split("|")[0].strip(): float(row.split("|")[1]) for row in lines
             if row.strip().startswith(("f32 ", "f16 ", "q8_0 "))}
    assert sizes["f32"] > sizes["f16"] > sizes["q8_0"] > 0
    _ratio(lines)


def test_serve_benchmark_reports_both_levels_without_errors_and_ends_with_a_ratio():
    lines = _quick_run("serve.py")
    header = next(i for i, line in enumerate(lines) if line.startswith("clients |"))
    rows = [[cell.strip() for cell in line.split("|")] for line in lines[header + 1:-1]]
    assert [(r[0], r[1], r[2]) for r in rows] == [("1", "2", "0"), ("4", "8", "0")]  # clients, requests, errors
    for r in rows:
        assert all(float(cell.rstrip("s").replace(",", "")) > 0 for cell in r[3:])  # ttft, latency, tokens/s
    _ratio(lines)

"""scripts/bench/gpu.sh, the one-command GPU check: without a CUDA device it stops at once with
one line and a non-zero exit (on a GPU machine it runs; see docs/scaling.md)."""

import subprocess
import sys

import pytest
import torch

from conftest import ROOT


@pytest.mark.skipif(torch.cuda.is_available(), reason="a CUDA device is present: the check would run")
def test_gpu_check_without_cuda_is_one_line_and_exit_1():
    proc = subprocess.run([str(ROOT / "scripts" / "bench" / "gpu.sh")], capture_output=True, text=True, timeout=120,
                          env={"PYTHON": sys.executable, "PATH": "/usr/bin:/bin"})
    assert proc.returncode == 1 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and "no CUDA device" in proc.stderr and "GPU machine" in proc.stderr

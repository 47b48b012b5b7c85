"""`torchrun` launches for the DDP tests: NPROC CPU processes on loopback, one thread each."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    """torchrun --standalone --nproc_per_node NPROC ARGS (a script and its arguments, or -m MODULE …)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), *map(str, args)], env=env, capture_output=True, text=True, timeout=300)

"""`torchrun` launches for the DDP tests (NPROC CPU processes on loopback, one thread each), and the command line
of the scripts they launch."""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path


def torchrun(*args, nproc: int = 2) -> subprocess.CompletedProcess:
    """torchrun --standalone --nproc_per_node NPROC ARGS (a script and its arguments, or -m MODULE …)."""
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONPATH=str(Path(__file__).resolve().parents[1]))
    return subprocess.run([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node",
                           str(nproc), *map(str, args)], env=env, capture_output=True, text=True, timeout=300)


def script_main(run, *switches: str) -> None:
    """The DDP test scripts' command line: `run(out, checkpoint, stop_after, <switches>)` from OUT [--checkpoint DIR]
    [--stop-after K] [SWITCH …]; a stop (KeyboardInterrupt: the simulated crash) exits with 3."""
    parser = argparse.ArgumentParser()
    parser.add_argument("out", type=Path)
    parser.add_argument("--checkpoint", type=Path)
    parser.add_argument("--stop-after", type=int)
    for switch in switches:
        parser.add_argument(switch, action="store_true")
    try:
        run(**vars(parser.parse_args()))
    except KeyboardInterrupt:
        sys.exit(3)

"""Benchmark: the ported pyliverlesionseg U-Nets through predict_volume on 2 CPU threads.

Volumes are random in [-0.5, 0.5] (the run time does not depend on the values) at sizes a study gives after
pyliverlesionseg's preprocessing: the liver model on the abdomen crop at 3 mm (one centre tile of
189 x 162 x 162 whatever the size, at most 163 x 136 x 136 voxels = 489 x 408 x 408 mm), the lesion model on
dilated-liver crops at 1 x 1 x 3 mm (tiles of 180 x 172 x 86 input, 92 x 84 x 42 output). Reports wall and
process CPU seconds (the machine may be shared: CPU seconds / threads estimates an idle machine), the
number of tiles and the share of time spent in convolutions. Not collected by pytest.

    .venv/bin/python Testing/Benchmarks/bench_unet_generalized.py [--threads 2]
"""
from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from HCCFusionLib.segmentation.liverlesion_models import (load_liverlesion, needed_tiles, predict_volume,
                                                          tile_layout)

CASES = [("liver", (163, 136, 120)), ("liver", (140, 110, 100)),
         ("lesion", (150, 130, 55)), ("lesion", (180, 160, 60)), ("lesion", (210, 180, 70))]


def conv_timer(net):
    """Accumulate wall seconds spent inside the network's convolutions."""
    spent = {"conv": 0.0}
    starts = {}

    def pre(module, _):
        starts[id(module)] = time.perf_counter()

    def post(module, _, __):
        spent["conv"] += time.perf_counter() - starts.pop(id(module))

    for conv in net.convs.values():
        conv.register_forward_pre_hook(pre)
        conv.register_forward_hook(post)
    return spent


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    nets = {}
    for kind, shape in CASES:
        if kind not in nets:
            bundle, net = load_liverlesion(kind)
            nets[kind] = (bundle, net, conv_timer(net))
        bundle, net, spent = nets[kind]
        plans = bundle.plans
        n_tiles = len(needed_tiles(tile_layout(shape, plans["input_segment_size"], plans["output_segment_size"],
                                               plans["center_sampling"]), shape))
        vol = np.random.default_rng(0).uniform(-0.5, 0.5, shape).astype(np.float32)
        spent["conv"] = 0.0
        wall, cpu = time.perf_counter(), time.process_time()
        predict_volume(net, vol, plans)
        wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
        print(f"{kind:6s} {str(shape):16s} tiles {n_tiles:2d}  wall {wall:6.1f} s  cpu {cpu:6.1f} s  "
              f"(cpu/{args.threads} {cpu / args.threads:5.1f} s)  conv share {spent['conv'] / wall:4.0%}", flush=True)


if __name__ == "__main__":
    main()

"""Scale of the CPU profile (issue 16): seconds per epoch of MLP1024, alone and as ensembles.

For each n_train in N_TRAIN: the regular schedule, Fashion-MNIST, batch 32, on the CPU,
- one network trained alone (`rmtlib.train.train`),
- K networks (the zoo's noise levels x seeds) trained as one ensemble
  (`rmtlib.ensemble.train_configs`, the route `trained_many` takes on a cache miss),
each with track_train="full" (the whole training set evaluated after every epoch) and
"epoch" (the running mean over the epoch's mini-batches). The test evaluation (8,000
images) runs after every epoch in all cases. Seconds per epoch are read from callbacks
stamping the time at the end of each epoch (epoch 0's evaluation and the set-up excluded),
best of the measured epochs. Two clocks: wall time, and the process's CPU time
(`time.process_time`), which with one torch thread is what the epoch costs on an idle
core however loaded the machine is (the default here: --threads=1).

`python benchmarks/bench_zoo_scale.py [--quick] [--epochs=N] [--threads=N] [--n=2000,5000] [--K=4,12]`; on a shared machine only the
ratios measured in one run mean something.
"""
import sys
import time

import torch

from _common import machine
from rmtlib import ensemble
from rmtlib.train import Config, train

N_TRAIN = [2000, 5000, 10000]
GRID = [(p, s) for s in (0, 1, 2) for p in (0.0, 0.2, 0.4, 1.0)]  # K = 12: the zoo at 3 seeds


class Stamp:
    def __init__(self):
        self.t = []

    def __call__(self, epoch, model, history):
        self.t.append((time.perf_counter(), time.process_time()))
        return False


def per_epoch(stamps):
    """(wall, cpu) seconds of the cheapest epoch after the first."""
    return tuple(min(b[i] - a[i] for a, b in zip(stamps, stamps[1:])) for i in (0, 1))


def alone(n, track, epochs):
    cfg = Config(noise=0.4, seed=0, n_train=n, epochs=epochs)
    ds = cfg.load_data()
    net = cfg.build_model(ds.input_shape, ds.num_classes)
    st = Stamp()
    train(net, ds, epochs=epochs, seed=0, device="cpu", progress=False, track_train=track, callbacks=[st])
    return per_epoch(st.t)


def together(n, K, track, epochs):
    cfgs = [Config(noise=p, seed=s, n_train=n, epochs=epochs) for p, s in GRID[:K]]
    stamps = [Stamp() for _ in cfgs]
    stamps[0].t = []
    cbs = [[stamps[0]]] + [[] for _ in cfgs[1:]]
    ensemble.train_configs(cfgs, device="cpu", progress=False, callbacks=cbs, track_train=track)
    return tuple(x / K for x in per_epoch(stamps[0].t))


def main():
    quick = "--quick" in sys.argv
    epochs = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--epochs=")), 3)
    ns = [1000] if quick else N_TRAIN
    only = next((a.split("=")[1] for a in sys.argv if a.startswith("--n=")), None)
    ns = [int(n) for n in only.split(",")] if only else ns
    ks = next((a.split("=")[1] for a in sys.argv if a.startswith("--K=")), None)
    ks = tuple(int(k) for k in ks.split(",")) if ks is not None and ks else ((4,) if quick else (4, 12))
    threads = next((int(a.split("=")[1]) for a in sys.argv if a.startswith("--threads=")), 1)
    torch.set_num_threads(threads)
    print("machine:", machine())
    print(f"epochs measured: {epochs} (best epoch reported); test evaluation on 8,000 images every epoch")
    print("| n_train | route | K | track_train | wall s per member-epoch | CPU s per member-epoch |")
    print("|---|---|---|---|---|---|")
    row = lambda n, route, K, track, t: print(f"| {n} | {route} | {K} | {track} | {t[0]:.2f} | {t[1]:.2f} |",
                                              flush=True)
    for n in ns:
        for track in ("full", "epoch"):
            row(n, "alone", 1, track, alone(n, track, epochs))
        for K in ks:
            if K == 12 and n != 5000:
                continue
            for track in ("full", "epoch"):
                row(n, "ensemble", K, track, together(n, K, track, epochs))


if __name__ == "__main__":
    main()

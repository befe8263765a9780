"""When does MLP1024 fit all its training labels? (issue 16: the overfitting schedule's length)

Trains configs of the CPU profile's data (Fashion-MNIST, n_train images) as one ensemble
(`rmtlib.ensemble.train_configs`, one torch thread) and reports, per member, the first
epoch at which the whole-set training accuracy (track_train="full") reaches 100% and the
test accuracy at a few epochs. Writes the histories as JSON.

`python benchmarks/zoo_memorization.py SCHEDULE EPOCHS NOISE[,NOISE...] [--n_train=5000]
[--seeds=0] [--out=file.json]`
"""
import json
import sys
import time

import torch

from _common import machine
from rmtlib import ensemble
from rmtlib.train import Config


def main():
    schedule, epochs, noises = sys.argv[1], int(sys.argv[2]), [float(p) for p in sys.argv[3].split(",")]
    opt = dict(a[2:].split("=", 1) for a in sys.argv[4:] if a.startswith("--"))
    n = int(opt.get("n_train", 5000))
    seeds = [int(s) for s in opt.get("seeds", "0").split(",")]
    torch.set_num_threads(int(opt.get("threads", 1)))
    cfgs = [Config(noise=p, seed=s, n_train=n, schedule=schedule, epochs=epochs) for s in seeds for p in noises]
    t0, c0 = time.perf_counter(), time.process_time()

    def report(k):
        def cb(epoch, model, history):
            print(f"member {k} epoch {epoch}: train {history.train_acc[-1]:.4f} test {history.test_acc[-1]:.4f} "
                  f"(CPU {time.process_time() - c0:.0f} s)", flush=True)
        return cb

    out, _ = ensemble.train_configs(cfgs, device="cpu", progress=False, track_train="full",
                                    callbacks=[[report(k)] for k in range(len(cfgs))])
    wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    print("machine:", machine())
    print(f"{len(cfgs)} members x {epochs} epochs, n_train {n}: wall {wall:.0f} s, CPU {cpu:.0f} s "
          f"({cpu / len(cfgs) / epochs:.2f} CPU s per member-epoch)")
    rows = []
    for cfg, (_, h) in zip(cfgs, out):
        first = next((e for e, a in zip(h.epoch, h.train_acc) if a >= 1.0), None)
        marks = {e: h.test_acc[e] for e in (10, 20, 40, 60, 80, 100, 150, 200, 300) if e < len(h.epoch)}
        print(f"{schedule} p={cfg.noise} seed={cfg.seed}: first epoch at 100% train: {first}; "
              f"final train {h.train_acc[-1]:.4f} test {h.test_acc[-1]:.4f}; test at "
              + ", ".join(f"{e}: {a:.4f}" for e, a in marks.items()))
        rows.append(dict(config=cfg.__dict__, first_full=first, epoch=h.epoch, train_acc=h.train_acc,
                         test_acc=h.test_acc, train_loss=h.train_loss))
    if "out" in opt:
        json.dump(dict(wall=wall, cpu=cpu, rows=rows), open(opt["out"], "w"))


if __name__ == "__main__":
    main()

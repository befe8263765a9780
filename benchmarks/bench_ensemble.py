"""Ensembles: K MLP1024 members trained as one batched model against K separate runs.

CPU part (always): K = 1, 4, 10 members on 10,000 Fashion-MNIST images, batch 32, one
epoch (test evaluation included, training-set evaluation off in both): seconds per
member-epoch of `rmtlib.ensemble.train_ensemble` against K separate `rmtlib.train.train`
runs, in the same process, and the two batched routes (bmm, vmap) at K = 4. On a machine
shared with other jobs only the ratios measured in one run mean something.

GPU part (only when CUDA is available): member-steps per second for K = 1, 10, 30, 90,
180 MLP1024 members at batch 32 on CIFAR-shaped data (stand-in tensors of the same
shape), with and without the CUDA graph, achieved FLOP/s as a fraction of the device's
dense TF32 peak; the implied training time of Fig. 5 (180 networks: 90 x 100 epochs +
90 x 500 epochs on 50,000 images); and bfloat16 autocast against float32 on one config
(MP sigma, outlier count and Porter-Thomas boundary of fc1).

`python benchmarks/bench_ensemble.py [--quick] [--threads=N]`: --quick uses 2,000 images
(a smoke run); --threads sets torch's CPU threads.
"""
import sys
import time

import torch

from _common import machine
from rmtlib import data, ensemble, models, train
from rmtlib.data import Dataset, Split

# dense TF32 tensor-core peaks (FLOP/s) from the vendors' data sheets, by device name
TF32_PEAK = {"H100 80GB HBM3": 494.7e12, "H100": 494.7e12, "H200": 494.7e12, "A100": 156e12}


def mlp1024_flop_per_image(in_features=784, classes=10):
    """Training FLOP per image and step: 3 x (2 x multiply-adds) of the forward pass."""
    widths = [in_features, 1024, 512, 512, classes]
    macs = sum(a * b for a, b in zip(widths[:-1], widths[1:]))
    return 3 * 2 * macs


def _members(K, ds, seed0=0):
    nets = []
    for k in range(K):
        torch.manual_seed(seed0 + k)
        nets.append(models.build("mlp1024", ds.input_shape, ds.num_classes))
    return nets


def _separate(K, ds):
    nets = _members(K, ds)
    t = time.perf_counter()
    for k, net in enumerate(nets):
        train.train(net, ds, epochs=1, seed=k, device="cpu", progress=False, track_train=False)
    return (time.perf_counter() - t) / K


def _together(K, ds, method="bmm"):
    nets = _members(K, ds)
    t = time.perf_counter()
    ensemble.train_ensemble(nets, ds, seeds=list(range(K)), epochs=1, device="cpu", progress=False,
                            track_train=False, method=method)
    return (time.perf_counter() - t) / K


def cpu_part(n=10_000, repeat=2):
    ds = data.load("fashion-mnist", n_train=n)
    print(f"## Ensembles on the CPU (MLP1024, {n:,} Fashion-MNIST images, batch 32, 1 epoch)\n")
    print(f"machine: {machine()}; best of {repeat} alternating repeats\n")
    print("| K | K separate runs (s per member-epoch) | ensemble, bmm (s per member-epoch) | speed-up |")
    print("|---|---|---|---|")
    out = {}
    for K in (1, 4, 10):
        sep, ens = float("inf"), float("inf")
        for _ in range(repeat):  # alternate, so that a burst of load hits both
            sep = min(sep, _separate(K, ds))
            ens = min(ens, _together(K, ds))
        out[K] = (sep, ens)
        print(f"| {K} | {sep:.2f} | {ens:.2f} | {sep / ens:.2f}x |", flush=True)
    K = 4
    times = {"bmm": float("inf"), "vmap": float("inf")}
    for _ in range(repeat):
        for method in times:
            times[method] = min(times[method], _together(K, ds, method))
    print(f"\nK = 4, s per member-epoch: bmm {times['bmm']:.2f}, vmap {times['vmap']:.2f} "
          f"(vmap / bmm = {times['vmap'] / times['bmm']:.2f})\n")
    return out


def standin(n=50_000, n_test=10_000, device="cuda"):
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n + n_test, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n + n_test,), generator=g)
    tr, te = Split(x[:n], y[:n]), Split(x[n:], y[n:])
    ds = Dataset("cifar10-standin", tr, te, te, tuple(range(10)), torch.zeros(n, dtype=torch.bool), y[:n], {})
    return ds.to(device)


def gpu_part():
    if not torch.cuda.is_available():
        print("## Ensembles on a GPU\n\nno CUDA GPU: skipped\n")
        return
    name = torch.cuda.get_device_name(0)
    peak = next((v for k, v in TF32_PEAK.items() if k in name), None)
    ds = standin()
    flop_img = mlp1024_flop_per_image(3 * 32 * 32)
    print(f"## Ensembles on a GPU ({name})\n\nmachine: {machine()}\n")
    print("| K | graph | member-steps/s | s per member-epoch (50,000 images) | TFLOP/s | of TF32 peak |")
    print("|---|---|---|---|---|---|")
    best = {}
    for K in (1, 10, 30, 90, 180):
        for graph in (True, False):
            if not graph and K > 30:
                continue
            nets = _members(K, ds)
            kw = dict(seeds=list(range(K)), device="cuda", progress=False, track_train="epoch",
                      cuda_graph=graph, precision="tf32")
            sub = Dataset(ds.name, Split(ds.train.x[:3200], ds.train.y[:3200]), ds.test, ds.test, ds.classes,
                          ds.noisy_mask[:3200], ds.clean_labels[:3200], {})
            ensemble.train_ensemble(nets, sub, epochs=1, **kw)  # warm-up and capture
            torch.cuda.synchronize()
            t = time.perf_counter()
            ensemble.train_ensemble(nets, ds, epochs=1, **kw)
            torch.cuda.synchronize()
            wall = time.perf_counter() - t
            steps = K * (len(ds.train) // 32)
            rate = steps / wall
            flops = K * len(ds.train) * flop_img / wall
            frac = f"{flops / peak:.1%}" if peak else "?"
            best[K] = max(best.get(K, 0), rate)
            print(f"| {K} | {graph} | {rate:,.0f} | {wall / K:.3f} | {flops / 1e12:.1f} | {frac} |", flush=True)
    rate = best[max(best)]
    total = 90 * (100 + 500) * (50_000 // 32) / rate
    print(f"\nFig. 5 training (90 x 100 + 90 x 500 epochs of 50,000 images) at the best rate "
          f"({rate:,.0f} member-steps/s): about {total / 60:.0f} minutes.\n")
    bf16_spectra()


def bf16_spectra(epochs=20):
    """fc1 of one Fashion-MNIST config trained in float32 and in bfloat16 autocast."""
    from rmtlib import marchenko_pastur as mp, porter_thomas as pt, spectra
    from rmtlib.train import Config

    cfg = Config(data="fashion-mnist", noise=0.4, seed=0, epochs=epochs)
    ds = cfg.load_data()
    print(f"### bfloat16 autocast against float32 (fc1, {cfg.model}, noise 40%, {epochs} epochs, 60,000 images)\n")
    print("| precision | test acc | MP sigma | outliers | PT boundary |\n|---|---|---|---|---|")
    for precision in ("float32", "bfloat16"):
        net = cfg.build_model(ds.input_shape, ds.num_classes)
        [h] = ensemble.train_ensemble([net], ds, seeds=[0], epochs=epochs, device="cuda", progress=False,
                                      precision=precision, track_train="epoch")
        W = spectra.weight_matrix(spectra.get_layer(net.cpu(), "fc1"))
        S = spectra.singular_values(W)
        fit = mp.fit(S, tuple(W.shape))
        res = pt.analyze(W)
        print(f"| {precision} | {h.test_acc[-1]:.4f} | {fit.sigma:.5f} | {fit.n_outliers} | {res.boundary:.4f} |")
    print()


def main(argv=None):
    argv = sys.argv[1:] if argv is None else argv
    for a in argv:
        if a.startswith("--threads="):  # on a machine shared with other jobs, 1 thread is steadier
            torch.set_num_threads(int(a.split("=", 1)[1]))
    cpu_part(2_000 if "--quick" in argv else 10_000)
    gpu_part()


if __name__ == "__main__":
    sys.exit(main())

"""Spectral early stopping (issue: chapter 5).

- `spectral_distance` on a 1024 x 2048 layer.
- The overhead the callback (monitoring fc2 and fc3, with spectrum types) adds to an epoch
  of NN1 on Gaussian ANOVA data (Meng & Yao's size: 7,500 samples per class, 10 classes,
  batch 64), as a ratio against the same epoch without the callback.
"""
import time

import torch

from _common import best_of, machine
from rmtlib import data, early_stopping as es, models, train


def main():
    W = torch.randn(1024, 2048, generator=torch.Generator().manual_seed(0))
    t_sn, s = best_of(lambda: es.spectral_distance(W), repeat=3)
    t_type, _ = best_of(lambda: es.spectrum_type(W), repeat=3)
    ds = data.load("anova-d2", t=1.0, n_per_class=7500, n_test_per_class=1500, n_val=2000)

    def epoch(callbacks):
        torch.manual_seed(0)
        net = models.build("nn1", ds.input_shape, ds.num_classes)
        t = time.perf_counter()
        train.train(net, ds, schedule="plain", epochs=1, callbacks=callbacks, progress=False, device="cpu")
        return time.perf_counter() - t

    plain = min(epoch([]) for _ in range(2))
    with_cb = min(epoch([es.SpectralEarlyStopping(["fc2", "fc3"], stop=False)]) for _ in range(2))
    with_cb_notype = min(epoch([es.SpectralEarlyStopping(["fc2", "fc3"], stop=False, types=False)]) for _ in range(2))
    print(f"## Spectral early stopping\n\nmachine: {machine()}\n")
    print(f"| task | seconds |\n|---|---|\n| spectral_distance, 1024x2048 | {t_sn:.3f} |\n"
          f"| spectrum_type, 1024x2048 | {t_type:.3f} |\n| NN1 epoch (75,000 samples, batch 64), no callback | {plain:.2f} |\n"
          f"| same with the callback on fc2+fc3 (s_n and type, measured at epoch 0 and 1) | {with_cb:.2f} |\n"
          f"| same with the callback, s_n only | {with_cb_notype:.2f} |")
    print(f"\nOverhead per epoch: {100 * (with_cb - plain) / plain:.1f}% with types, "
          f"{100 * (with_cb_notype - plain) / plain:.1f}% with s_n only (the callback also measures epoch 0; "
          f"in a run of E epochs that one-off cost is shared by all).\n")


if __name__ == "__main__":
    main()

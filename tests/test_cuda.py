"""CUDA paths (skipped on machines without a GPU; run on a GPU box or Colab)."""
import numpy as np
import pytest
import torch

from rmtlib import filtering, models, train

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


def test_training_on_cuda_learns_and_keeps_the_model_on_the_gpu(fashion_small):
    torch.manual_seed(0)
    net = models.mlp([784, 64, 10])
    hist = train.train(net, fashion_small, epochs=2, device="cuda", progress=False)
    assert next(net.parameters()).is_cuda
    assert hist.train_loss[-1] < hist.train_loss[0]


def test_removal_sweep_on_cuda_equals_cpu(fashion_small):
    torch.manual_seed(0)
    net = models.mlp([784, 64, 48, 10])
    train.train(net, fashion_small, epochs=2, device="cpu", progress=False)
    fr = np.linspace(0, 1, 11)
    cpu = filtering.removal_sweep(net.cpu(), ["fc1", "fc2"], fr, fashion_small, splits=("test",))
    gpu = filtering.removal_sweep(net, ["fc1", "fc2"], fr, fashion_small, splits=("test",), device="cuda")
    assert np.allclose(cpu.test_acc, gpu.test_acc, atol=2 / len(fashion_small.test))


def test_denoise_on_cuda(fashion_small):
    torch.manual_seed(0)
    net = models.mlp([784, 64, 48, 10])
    train.train(net, fashion_small, epochs=2, device="cuda", progress=False)
    filtered, report = filtering.denoise(net, fashion_small.val, test=fashion_small.test, device="cuda",
                                         progress_bar=False)
    assert report.attrs["val_after"] >= report.attrs["val_before"]

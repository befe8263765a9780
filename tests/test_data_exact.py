"""Data loading against the raw files and hand-computed values (issue 17: tests that catch bugs).

The raw Fashion-MNIST IDX files are read here with numpy (16-byte header for images, 8 for
labels) and standardized by hand in float64; the loader's float32 images must agree to
float32 rounding (values of order 1-10 -> errors below 1e-5).
"""
import math
from pathlib import Path

import numpy as np
import pytest
import torch

from rmtlib import data


def _raw_fashion():
    root = None
    for cand in data._candidate_roots(None):
        if (Path(cand) / "FashionMNIST" / "raw" / "t10k-images-idx3-ubyte").exists():
            root = Path(cand) / "FashionMNIST" / "raw"
            break
    if root is None:
        pytest.skip("Fashion-MNIST is not unpacked here (make data)")

    def read(name, offset, shape):
        return np.frombuffer((root / name).read_bytes(), dtype=np.uint8, offset=offset).reshape(shape)

    return (read("train-images-idx3-ubyte", 16, (60000, 784)), read("train-labels-idx1-ubyte", 8, (60000,)),
            read("t10k-images-idx3-ubyte", 16, (10000, 784)), read("t10k-labels-idx1-ubyte", 8, (10000,)))


def _standardized(raw):
    x = raw.astype(np.float64)
    mean = x.mean(1, keepdims=True)
    std = np.maximum(x.std(1, keepdims=True), 1 / math.sqrt(x.shape[1]))  # TF's floor 1/sqrt(pixels)
    return (x - mean) / std


def test_every_split_is_the_raw_images_standardized_each_with_their_labels():
    xtr, ytr, xte, yte = _raw_fashion()
    ds = data.load("fashion-mnist", n_train=300, n_val=200, n_test=100)
    # the fixed subsets: a seeded permutation of the training set, and one of the test set
    # split into validation (first n_val) and test (the next n_test), each in index order
    gen = torch.Generator().manual_seed(data._SPLIT_SEED)
    keep = torch.randperm(60000, generator=gen)[:300].sort().values.numpy()
    order = torch.randperm(10000, generator=gen).numpy()
    val_idx, test_idx = np.sort(order[:200]), np.sort(order[200:300])
    for split, raw_x, raw_y, idx in ((ds.train, xtr, ytr, keep), (ds.val, xte, yte, val_idx),
                                     (ds.test, xte, yte, test_idx)):
        assert split.x.dtype == torch.float32 and split.x.shape == (len(idx), 1, 28, 28)
        got = split.x.reshape(len(idx), -1).double().numpy()
        assert np.abs(got - _standardized(raw_x[idx])).max() < 1e-5
        assert np.array_equal(split.y.numpy(), raw_y[idx].astype(np.int64))
    assert not set(val_idx) & set(test_idx)
    assert np.array_equal(ds.clean_labels.numpy(), ytr[keep])


def test_validation_and_test_images_have_zero_mean_and_unit_std_each():
    ds = data.load("fashion-mnist", n_train=100, n_val=300, n_test=300)
    for split in (ds.train, ds.val, ds.test):
        flat = split.x.reshape(len(split), -1).double()
        assert flat.mean(1).abs().max() < 1e-5
        assert (flat.std(1, unbiased=False) - 1).abs().max() < 1e-5


def test_standardize_images_by_hand():
    # [0, 0, 4, 4]: mean 2, std 2 -> [-1, -1, 1, 1]
    x = torch.tensor([[[[0.0, 0.0], [4.0, 4.0]]]])
    assert torch.allclose(data.standardize_images(x), torch.tensor([[[[-1.0, -1.0], [1.0, 1.0]]]]))
    # a nearly constant image: std sqrt(3)/4 * 1e-3 < 1/sqrt(4) = 0.5, so the floor 0.5 divides:
    # mean 2.5e-4 -> [-5e-4, -5e-4, -5e-4, 1.5e-3]
    y = data.standardize_images(torch.tensor([[[[0.0, 0.0], [0.0, 1e-3]]]], dtype=torch.float64))
    assert y.dtype == torch.float32
    assert torch.allclose(y.flatten(), torch.tensor([-5e-4, -5e-4, -5e-4, 1.5e-3]), atol=1e-9)
    # images are standardized independently of each other
    two = data.standardize_images(torch.stack([x[0], 3 * x[0] + 10]))
    assert torch.allclose(two[0], two[1], atol=1e-6)


def test_shuffle_labels_small_case_by_hand():
    labels = torch.tensor([0, 1, 2, 3, 4, 5, 6, 7])
    new, mask = data.shuffle_labels(labels, 0.5, seed=9)
    assert int(mask.sum()) == 4  # round(0.5 * 8)
    # the drawn positions carry a permutation of their own labels; the others are untouched
    assert sorted(new[mask].tolist()) == sorted(labels[mask].tolist())
    assert torch.equal(new[~mask], labels[~mask])
    same, none = data.shuffle_labels(labels, 0.0, seed=9)
    assert torch.equal(same, labels) and not none.any()
    # 0.3 * 8 = 2.4 -> 2 labels drawn; 0.45 * 8 = 3.6 -> 4
    assert int(data.shuffle_labels(labels, 0.3, seed=1)[1].sum()) == 2
    assert int(data.shuffle_labels(labels, 0.45, seed=1)[1].sum()) == 4


def test_anova_means_and_snr_by_hand():
    # D2(t): t (e_k - 1/K) for K = 3 classes in dim 4
    m = data.anova_means("anova-d2", dim=4, classes=3, t=2.0)
    want = 2.0 * (np.eye(3, 4) - np.full((3, 4), 1 / 3))
    assert np.allclose(m.numpy(), want, atol=1e-15)
    # all pairwise distances ||t (e_a - e_b)|| = t sqrt(2): SNR = 2 sqrt(2) / sigma
    assert data.anova_snr(m, sigma=0.5) == pytest.approx(2 * math.sqrt(2) / 0.5, rel=1e-12)
    # D1(delta): entries m on dim/2 coordinates, m + delta on the others, per class
    d1 = data.anova_means("anova-d1", dim=6, classes=4, delta=1.5, m=-0.2, seed=3).numpy()
    assert d1.shape == (4, 6)
    for row in d1:
        assert np.sum(np.isclose(row, -0.2)) == 3 and np.sum(np.isclose(row, 1.3)) == 3
    # snr: mean over the 6 pairs of the distances, by hand
    pairs = [np.linalg.norm(d1[a] - d1[b]) for a in range(4) for b in range(a + 1, 4)]
    assert data.anova_snr(torch.tensor(d1), 2.0) == pytest.approx(np.mean(pairs) / 2.0, rel=1e-12)


def test_anova_dataset_is_means_plus_gaussian_noise():
    ds = data.load("anova-d2", dim=20, classes=4, n_per_class=3000, n_test_per_class=600, t=3.0,
                   sigma=0.5, n_val=400)
    means = data.anova_means("anova-d2", dim=20, classes=4, t=3.0).numpy()
    x, y = ds.train.x.double().numpy(), ds.train.y.numpy()
    assert np.array_equal(np.bincount(y), [3000] * 4)
    # per class, the sample mean is mu_k within 5 standard errors (0.5 / sqrt(3000) each)
    for k in range(4):
        err = x[y == k].mean(0) - means[k]
        assert np.abs(err).max() < 5 * 0.5 / math.sqrt(3000)
        assert x[y == k].std(0).mean() == pytest.approx(0.5, rel=0.03)  # 20 x 3000 values: ~1% spread
    assert (len(ds.val), len(ds.test)) == (400, 2000)
    assert ds.info["snr"] == pytest.approx(3.0 * math.sqrt(2) / 0.5, rel=1e-12)

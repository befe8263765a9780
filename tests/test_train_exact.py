"""The training loop against SGD written out by hand (issue 17: tests that catch bugs).

Every expectation here is computed independently of rmtlib.train: the SGD update with
momentum v <- mu v + (g + wd w), w <- w - lr v (PyTorch's convention, which Keras' SGD matches
up to the sign of v), the per-epoch learning rate lr * gamma^epoch * step_gamma^(epoch // step),
the mini-batch order of a seeded torch.randperm per epoch, and the evaluation sums.
Everything runs in float64, so the only differences are rounding (~1e-15 per operation).
"""
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from rmtlib import train
from rmtlib.data import Dataset, Split
from rmtlib.train import Schedule

N, D, C = 12, 5, 3


def _dataset(seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(N, D, generator=g, dtype=torch.float64)
    y = torch.randint(0, C, (N,), generator=g)
    xt = torch.randn(7, D, generator=g, dtype=torch.float64)
    yt = torch.randint(0, C, (7,), generator=g)
    return Dataset("toy", Split(x, y), Split(xt, yt), Split(xt, yt), tuple(range(C)),
                   torch.zeros(N, dtype=torch.bool), y.clone())


def _net(l2=0.0):
    torch.manual_seed(0)
    net = nn.Sequential(nn.Linear(D, 4), nn.Tanh(), nn.Linear(4, C)).double()
    if l2:
        net[0].l2 = l2  # Keras-style L2 on the first layer's weight only
    return net


def _by_hand(net, data, sched, epochs, bs, seed, l2=0.0):
    """Plain-Python SGD with momentum, weight decay 2*l2 on net[0].weight, seeded batch order."""
    params = [p.detach().clone() for p in net.parameters()]
    names = [n for n, _ in net.named_parameters()]
    vel = [None] * len(params)
    x, y = data.train.x, data.train.y
    gen = torch.Generator().manual_seed(seed)
    lrs = []
    for epoch in range(epochs):
        lr = sched.lr * sched.gamma**epoch * (sched.step_gamma ** (epoch // sched.step) if sched.step else 1.0)
        lrs.append(lr)
        perm = torch.randperm(N, generator=gen)
        for i in range(0, N, bs):
            idx = perm[i : i + bs]
            ps = [p.clone().requires_grad_(True) for p in params]
            h = torch.tanh(x[idx] @ ps[0].T + ps[1])
            loss = F.cross_entropy(h @ ps[2].T + ps[3], y[idx])
            grads = torch.autograd.grad(loss, ps)
            for j, (p, g) in enumerate(zip(params, grads)):
                if names[j] == "0.weight" and l2:
                    g = g + 2 * l2 * p
                vel[j] = g.clone() if vel[j] is None else sched.momentum * vel[j] + g
                params[j] = p - lr * vel[j]
    return params, lrs


@pytest.mark.parametrize("bs", [N, 5])  # full batch; mini-batches of 5, 5, 2 (a short last one)
@pytest.mark.parametrize("l2", [0.0, 0.03])
def test_sgd_with_momentum_decay_and_weight_decay_matches_the_update_written_out(bs, l2):
    sched = Schedule("t", lr=0.3, momentum=0.9, batch_size=bs, epochs=4, gamma=0.8, step=2, step_gamma=0.5)
    data, net = _dataset(), _net(l2)
    want, lrs = _by_hand(net, data, sched, 4, bs, seed=11, l2=l2)
    hist = train.train(net, data, schedule=sched, seed=11, progress=False, device="cpu")
    for p, w in zip(net.parameters(), want):
        assert torch.allclose(p.detach(), w, rtol=0, atol=1e-12)
    # lr logged per epoch: 0.3 * 0.8^e * 0.5^(e // 2); row 0 is the state before training
    assert hist.lr == pytest.approx([lrs[0]] + lrs, rel=1e-15)
    assert lrs == pytest.approx([0.3, 0.24, 0.3 * 0.64 * 0.5, 0.3 * 0.512 * 0.5], rel=1e-15)


def test_momentum_is_used():
    # the same run without momentum ends elsewhere: momentum changes the weights after
    # the second step by lr * mu * g1 (here ~1e-2), far above rounding
    sched = Schedule("t", lr=0.3, momentum=0.9, batch_size=N, epochs=3)
    plain = Schedule("p", lr=0.3, momentum=0.0, batch_size=N, epochs=3)
    data = _dataset()
    with_m, without = _net(), _net()
    train.train(with_m, data, schedule=sched, progress=False, device="cpu")
    train.train(without, data, schedule=plain, progress=False, device="cpu")
    want, _ = _by_hand(_net(), data, sched, 3, N, seed=0)
    gap = max(float((a - b).detach().abs().max()) for a, b in zip(with_m.parameters(), without.parameters()))
    assert gap > 1e-3
    assert all(torch.allclose(p.detach(), w, atol=1e-12) for p, w in zip(with_m.parameters(), want))


def test_lr_override_and_epochs_override_keep_the_decay():
    # lr=0.1 instead of the schedule's 0.3: every epoch's lr scales by 1/3, decay kept
    sched = Schedule("t", lr=0.3, momentum=0.5, batch_size=N, epochs=9, gamma=0.5)
    data = _dataset()
    net = _net()
    hist = train.train(net, data, schedule=sched, epochs=2, lr=0.1, progress=False, device="cpu")
    assert hist.epoch == [0, 1, 2]
    assert hist.lr == pytest.approx([0.1, 0.1, 0.05], rel=1e-15)
    want, _ = _by_hand(_net(), data, Schedule("t", 0.1, 0.5, N, 2, gamma=0.5), 2, N, seed=0)
    assert all(torch.allclose(p.detach(), w, atol=1e-12) for p, w in zip(net.parameters(), want))


def _eval_by_hand(net, split):
    with torch.no_grad():
        out = net(split.x)
    acc = float((out.argmax(1) == split.y).double().mean())
    loss = float(-torch.log_softmax(out, 1)[torch.arange(len(split.y)), split.y].mean())
    return acc, loss


def test_history_records_accuracy_and_loss_of_the_weights_after_each_epoch():
    data = _dataset(3)
    sched = Schedule("t", lr=0.5, momentum=0.0, batch_size=N, epochs=2)
    snapshots = []

    def keep(epoch, model, history):
        snapshots.append((_eval_by_hand(model, data.train), _eval_by_hand(model, data.test)))

    net = _net()
    first = (_eval_by_hand(net, data.train), _eval_by_hand(net, data.test))
    hist = train.train(net, data, schedule=sched, callbacks=[keep], progress=False, device="cpu")
    want = [first] + snapshots
    for e, ((tr_acc, tr_loss), (te_acc, te_loss)) in enumerate(want):
        assert hist.train_acc[e] == pytest.approx(tr_acc, abs=1e-12)
        assert hist.train_loss[e] == pytest.approx(tr_loss, rel=1e-12)
        assert hist.test_acc[e] == pytest.approx(te_acc, abs=1e-12)
        assert hist.test_loss[e] == pytest.approx(te_loss, rel=1e-12)
    assert not net.training  # left in eval mode


def test_evaluate_sums_over_batches_exactly():
    data = _dataset(4)
    net = _net()
    acc, loss = _eval_by_hand(net, data.train)
    for bs in (1, 5, N, 100):
        a, l = train.evaluate(net, data.train, batch_size=bs)
        assert a == pytest.approx(acc, abs=1e-15) and l == pytest.approx(loss, rel=1e-12)
    net.train()
    train.evaluate(net, data.train)
    assert net.training  # the mode is restored


def test_track_train_epoch_is_the_running_mean_over_the_minibatches():
    # track_train="epoch": accuracy and loss of each mini-batch's forward pass, summed over
    # the epoch and divided by N (Keras' running mean), computed by hand with the same order
    data, bs = _dataset(5), 4
    sched = Schedule("t", lr=0.2, momentum=0.0, batch_size=bs, epochs=1)
    net = _net()
    params = [p.detach().clone() for p in net.parameters()]
    gen = torch.Generator().manual_seed(2)
    perm = torch.randperm(N, generator=gen)
    correct, total = 0, 0.0
    for i in range(0, N, bs):
        idx = perm[i : i + bs]
        ps = [p.clone().requires_grad_(True) for p in params]
        out = torch.tanh(data.train.x[idx] @ ps[0].T + ps[1]) @ ps[2].T + ps[3]
        loss = F.cross_entropy(out, data.train.y[idx])
        correct += int((out.argmax(1) == data.train.y[idx]).sum())
        total += float(loss.detach()) * len(idx)
        grads = torch.autograd.grad(loss, ps)
        params = [p - 0.2 * g for p, g in zip(params, grads)]
    hist = train.train(net, data, schedule=sched, seed=2, track_train="epoch", progress=False, device="cpu")
    assert hist.train_acc[1] == pytest.approx(correct / N, abs=1e-15)
    assert hist.train_loss[1] == pytest.approx(total / N, rel=1e-12)
    assert math.isnan(train.train(_net(), data, schedule=sched, track_train=False, progress=False,
                                  device="cpu").train_acc[1])

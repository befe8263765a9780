"""Training: the schedules of Staats et al. and Meng & Yao, a plain fast loop, a model cache.

METHODS §7 (schedules "regular" and "overfitting", per-layer L2) and §6 ("plain":
SGD lr 0.01, batch 64). The whole data set lives as tensors on the device and each
epoch indexes a seeded permutation of it (airbench's habit): no DataLoader and no
per-sample Python.
"""
from __future__ import annotations

import hashlib
import json
import math
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from . import models as _models
from ._io import cache_dir, load_checked, save_checked
from .data import Dataset, Split
from .devices import resolve_device

CACHE_VERSION = 2  # bump when a model's layout or the training loop changes


@dataclass(frozen=True)
class Schedule:
    """An SGD schedule: lr(epoch) = lr * gamma**epoch * step_gamma**(epoch // step)."""

    name: str
    lr: float
    momentum: float
    batch_size: int
    epochs: int
    gamma: float = 1.0
    step: int = 0
    step_gamma: float = 1.0

    def lr_at(self, epoch: int) -> float:
        """Learning rate during epoch `epoch` (0-based)."""
        value = self.lr * self.gamma**epoch
        if self.step:
            value *= self.step_gamma ** (epoch // self.step)
        return value


SCHEDULES = {
    # Staats et al. Suppl. A: momentum 0.95, lr 0.005 decayed by 0.95 per epoch, batch 32.
    "regular": Schedule("regular", lr=0.005, momentum=0.95, batch_size=32, epochs=100, gamma=0.95),
    # 500 epochs, lr 0.001 multiplied by 0.7 every 50 epochs.
    "overfitting": Schedule("overfitting", lr=0.001, momentum=0.95, batch_size=32, epochs=500,
                            step=50, step_gamma=0.7),
    # Meng & Yao: plain SGD, lr 0.01, batch 64.
    "plain": Schedule("plain", lr=0.01, momentum=0.0, batch_size=64, epochs=100),
}


def get_schedule(schedule) -> Schedule:
    if isinstance(schedule, Schedule):
        return schedule
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule {schedule!r}; choose one of {', '.join(SCHEDULES)}")
    return SCHEDULES[schedule]


class StopTraining(Exception):
    """Raise from a callback (or return True) to stop after the current epoch."""


@dataclass
class History:
    """Per-epoch training record. Epochs are numbered from 1; epoch 0 is the initial state."""

    epoch: list = field(default_factory=list)
    lr: list = field(default_factory=list)
    train_loss: list = field(default_factory=list)
    train_acc: list = field(default_factory=list)
    test_loss: list = field(default_factory=list)
    test_acc: list = field(default_factory=list)
    stopped_epoch: int | None = None
    stopped_by: str | None = None
    extra: dict = field(default_factory=dict)

    def append(self, **row):
        for key, value in row.items():
            getattr(self, key).append(value)

    def record(self, key: str, epoch: int, value) -> None:
        """Store a callback's per-epoch value under `extra[key]` as (epoch, value) pairs."""
        self.extra.setdefault(key, []).append((epoch, value))

    def to_frame(self):
        import pandas as pd

        cols = ("epoch", "lr", "train_loss", "train_acc", "test_loss", "test_acc")
        return pd.DataFrame({c: getattr(self, c) for c in cols})

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "History":
        return cls(**{f.name: d[f.name] for f in fields(cls) if f.name in d})

    def __len__(self):
        return len(self.epoch)


@torch.no_grad()
def evaluate(model: nn.Module, split: Split, batch_size: int = 2048) -> tuple[float, float]:
    """(accuracy, mean cross-entropy) of `model` on a split, in eval mode.

    The sums stay on the model's device until the end (one host synchronisation).
    """
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    correct = torch.zeros((), dtype=torch.long, device=dev)
    loss = torch.zeros((), dtype=torch.float64, device=dev)
    for i in range(0, len(split), batch_size):
        xb = split.x[i : i + batch_size].to(dev, non_blocking=True)
        yb = split.y[i : i + batch_size].to(dev, non_blocking=True)
        out = model(xb)
        loss += F.cross_entropy(out, yb, reduction="sum").double()
        correct += (out.argmax(1) == yb).sum()
    model.train(was_training)
    n = max(len(split), 1)
    return int(correct) / n, float(loss) / n


def _param_groups(model: nn.Module):
    """Split parameters by the per-layer L2 strength set on modules (attribute `l2`).

    Keras' penalty lambda * ||W||^2 has gradient 2 * lambda * W, so weight decay is 2 * lambda.
    Biases are not regularised.
    """
    decayed, plain, seen = {}, [], set()
    for module in model.modules():
        l2 = float(getattr(module, "l2", 0.0) or 0.0)
        if l2 > 0 and getattr(module, "weight", None) is not None:
            decayed.setdefault(2.0 * l2, []).append(module.weight)
            seen.add(id(module.weight))
    for p in model.parameters():
        if id(p) not in seen and p.requires_grad:
            plain.append(p)
    groups = [{"params": plain, "weight_decay": 0.0}]
    groups += [{"params": ps, "weight_decay": wd} for wd, ps in decayed.items()]
    return groups


def _call(cb, epoch, model, history) -> bool:
    fn = getattr(cb, "on_epoch_end", cb)
    try:
        return bool(fn(epoch, model, history))
    except StopTraining:
        return True


def train(model: nn.Module, data: Dataset, *, schedule="regular", epochs: int | None = None,
          seed: int = 0, callbacks=(), device=None, batch_size: int | None = None,
          lr: float | None = None, progress: bool = True, track_train="full",
          precision: str = "tf32") -> History:
    """Train `model` in place with SGD on `data.train`; evaluate on `data.test` every epoch.

    Parameters
    ----------
    schedule : "regular" | "overfitting" | "plain" or a `Schedule` (METHODS §6, §7).
    epochs : overrides the schedule's number of epochs (the lr decay per epoch stays).
    seed : seeds the order of the mini-batches; same seed, same device -> same weights.
    callbacks : callables `cb(epoch, model, history)` or objects with `on_epoch_end`;
        returning True (or raising `StopTraining`) stops after that epoch. Objects may
        also have `on_train_begin(model, history)`, called with epoch 0's state recorded.
    device : "auto" (CUDA when present), "cpu", "cuda"; default "auto".
    track_train : how History.train_acc / train_loss are measured after each epoch:
        "full" (or True, the default): on the whole training set with the epoch's final
        weights; "epoch": the running mean over the epoch's mini-batches, measured during
        the forward passes of training (free; Keras' convention, hence what Staats et
        al.'s logs report; it lags the final weights by about half an epoch); False: not
        measured (NaN). Epoch 0 is always measured on the whole training set.
    precision : "tf32" (default: TF32 matrix products on CUDA), "float32" (strict on CUDA
        too), "bfloat16" (forward and loss under bfloat16 autocast). On the CPU only
        "bfloat16" changes anything (see `rmtlib.ensemble.precision_context`).

    Returns a `History`; row 0 is the state before training.
    """
    sched = get_schedule(schedule)
    n_epochs = sched.epochs if epochs is None else epochs
    if int(n_epochs) != n_epochs or n_epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer; got {epochs!r}")
    bs = sched.batch_size if batch_size is None else batch_size
    if int(bs) != bs or bs < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be an rmtlib.data.Dataset (from rmtlib.data.load); got {type(data).__name__}")
    if track_train is True:
        track_train = "full"
    if track_train not in ("full", "epoch", False):
        raise ValueError(f"track_train must be 'full' (True), 'epoch' or False; got {track_train!r}")
    from .ensemble import PRECISIONS, autocast, precision_context

    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    dev = resolve_device(device)
    callbacks = list(callbacks) if callbacks else []
    for cb in callbacks:
        if not callable(getattr(cb, "on_epoch_end", cb)):
            raise TypeError(f"callback {cb!r} is not callable and has no on_epoch_end")

    with precision_context(precision, dev):
        return _train_loop(model, data, sched, int(n_epochs), int(bs), lr, seed, callbacks, dev,
                           progress, track_train, lambda: autocast(precision, dev))


def _train_loop(model, data, sched, n_epochs, bs, lr, seed, callbacks, dev, progress, track_train,
                amp) -> History:
    model.to(dev)
    x, y = data.train.x.to(dev), data.train.y.to(dev)
    test = data.test.to(dev)
    n = len(y)
    bs = int(bs)
    base_lr = sched.lr if lr is None else float(lr)
    try:  # the fused kernel saves about 10% of a CPU step of MLP1024 (benchmarks/)
        opt = torch.optim.SGD(_param_groups(model), lr=base_lr, momentum=sched.momentum, fused=True)
    except (RuntimeError, TypeError, ValueError):
        opt = torch.optim.SGD(_param_groups(model), lr=base_lr, momentum=sched.momentum)
    gen = torch.Generator().manual_seed(int(seed))
    history = History()

    def log(epoch, lr_now, running=None):
        if running is not None:  # track_train="epoch": (correct, summed loss) over the epoch
            tr = (int(running[0]) / n, float(running[1]) / n)
        else:
            tr = evaluate(model, Split(x, y)) if track_train else (math.nan, math.nan)
        te = evaluate(model, test)
        history.append(epoch=epoch, lr=lr_now, train_acc=tr[0], train_loss=tr[1],
                       test_acc=te[0], test_loss=te[1])

    log(0, sched.lr_at(0) * base_lr / sched.lr)
    for cb in callbacks:
        if hasattr(cb, "on_train_begin"):
            cb.on_train_begin(model, history)

    bar = None
    if progress and n_epochs:
        from .progress import progress as _bar

        bar = _bar(total=n_epochs, desc=f"train {sched.name}", leave=False)
    try:
        for epoch in range(1, n_epochs + 1):
            lr_now = sched.lr_at(epoch - 1) * base_lr / sched.lr
            for group in opt.param_groups:
                group["lr"] = lr_now
            model.train()
            perm = torch.randperm(n, generator=gen).to(dev)
            running = None
            if track_train == "epoch":
                running = [torch.zeros((), dtype=torch.long, device=dev),
                           torch.zeros((), dtype=torch.float64, device=dev)]
            for i in range(0, n, int(bs)):
                idx = perm[i : i + int(bs)]
                with amp():
                    out = model(x[idx])
                    loss = F.cross_entropy(out, y[idx])
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                if running is not None:
                    with torch.no_grad():
                        running[0] += (out.argmax(1) == y[idx]).sum()
                        running[1] += loss.detach().double() * len(idx)
            if not torch.isfinite(loss):
                raise FloatingPointError(f"training diverged at epoch {epoch} (loss {loss.item()}); lower the learning rate")
            log(epoch, lr_now, running)
            if bar is not None:
                bar.update(1)
                bar.set_postfix(train=f"{history.train_acc[-1]:.3f}", test=f"{history.test_acc[-1]:.3f}")
            stop = [type(cb).__name__ for cb in callbacks if _call(cb, epoch, model, history)]
            if stop:
                history.stopped_epoch, history.stopped_by = epoch, stop[0]
                break
    finally:
        if bar is not None:
            bar.close()
    model.eval()
    return history


def trained_many(configs, *, device=None, progress: bool = True, retrain: bool = False, **options):
    """Trained networks for a grid of configs: cache hits loaded, misses trained as ensembles.

    See `rmtlib.ensemble.trained_many`. Returns [(model on CPU in eval mode, History)] in
    the order of `configs`; every member is cached under its own key, as `trained` does.
    """
    from .ensemble import trained_many as _many  # lazy: rmtlib.ensemble uses this module

    return _many(configs, device=device, progress=progress, retrain=retrain, **options)


# --------------------------------------------------------------------------- model cache
@dataclass(frozen=True)
class Config:
    """Everything that determines a trained network; its hash keys the model cache."""

    data: str = "fashion-mnist"
    noise: float = 0.0
    seed: int = 0
    n_train: int | None = None
    model: str = "mlp1024"
    schedule: str = "regular"
    epochs: int | None = None
    n_val: int = 2000
    batch_size: int | None = None
    model_options: tuple = ()

    def __post_init__(self):
        opts = self.model_options
        if isinstance(opts, dict):
            opts = tuple(sorted(opts.items()))
        object.__setattr__(self, "model_options",
                           tuple((k, tuple(v) if isinstance(v, list) else v) for k, v in opts))
        object.__setattr__(self, "noise", float(self.noise))

    @classmethod
    def of(cls, config) -> "Config":
        if isinstance(config, cls):
            return config
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict or rmtlib.train.Config; got {type(config).__name__}")
        unknown = set(config) - {f.name for f in fields(cls)}
        if unknown:
            raise ValueError(f"unknown config keys {sorted(unknown)}; valid: {[f.name for f in fields(cls)]}")
        return cls(**config)

    def validate(self) -> "Config":
        from .data import NAMES

        if self.data not in NAMES:
            raise ValueError(f"unknown data set {self.data!r}; choose one of {', '.join(NAMES)}")
        if self.model not in _models.MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(_models.MODELS)}")
        get_schedule(self.schedule)
        if not 0.0 <= self.noise <= 1.0:
            raise ValueError(f"noise must be a fraction in [0, 1]; got {self.noise}")
        if self.epochs is not None and (int(self.epochs) != self.epochs or self.epochs < 0):
            raise ValueError(f"epochs must be a non-negative integer or None; got {self.epochs!r}")
        return self

    def key(self) -> str:
        text = json.dumps({"v": CACHE_VERSION, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def path(self) -> Path:
        tag = f"{self.model}-{self.data}-{self.schedule}-p{int(round(100 * self.noise)):03d}-s{self.seed}"
        return cache_dir("models") / f"{tag}-{self.key()}.pt"

    def load_data(self, device=None) -> Dataset:
        from . import data as _data

        return _data.load(self.data, noise=self.noise, seed=self.seed, n_train=self.n_train,
                          n_val=self.n_val, device=device)

    def build_model(self, input_shape, classes) -> nn.Module:
        torch.manual_seed(self.seed)  # the initial weights depend on the seed only
        return _models.build(self.model, input_shape, classes, **dict(self.model_options))


def trained(config, *, data: Dataset | None = None, device=None, progress: bool = True,
            retrain: bool = False):
    """A trained network for `config`, from the cache when possible (trains on a miss).

    The cache file is keyed by a hash of the whole config, written atomically with a
    checksum; a damaged or mismatching file is retrained, never loaded.
    `epochs=0` gives the random initialisation. Returns (model on CPU in eval mode, History).
    """
    cfg = Config.of(config).validate()
    if not retrain:
        hit = load_cached(cfg)
        if hit is not None:
            return hit
    ds = data if data is not None else cfg.load_data()
    if data is not None and (ds.info.get("noise") != cfg.noise or ds.info.get("seed") != cfg.seed):
        raise ValueError("data= does not match config (noise/seed); omit data= to load it from the config")
    model = cfg.build_model(ds.input_shape, ds.num_classes)
    history = train(model, ds, schedule=cfg.schedule, epochs=cfg.epochs, seed=cfg.seed,
                    device=device, batch_size=cfg.batch_size, progress=progress)
    model = model.cpu().eval()
    save_cached(cfg, model, history, ds)
    return model, history


def load_cached(config):
    """(model, History) for `config` from the model cache, or None on a miss.

    A damaged or mismatching file is reported with a warning and treated as a miss.
    """
    cfg = Config.of(config)
    path = cfg.path()
    if not path.exists():
        return None
    try:
        payload = load_checked(path)
        if payload.get("config") != asdict(cfg):
            raise ValueError("config in file differs")
        model = cfg.build_model(payload["input_shape"], payload["num_classes"])
        model.load_state_dict(payload["state_dict"])
        return model.eval(), History.from_dict(payload["history"])
    except Exception as err:  # damaged, truncated, or from another version: rebuild
        warnings.warn(f"model cache {path.name} unusable ({err}); retraining", stacklevel=2)
        return None


def save_cached(config, model: nn.Module, history: History, data: Dataset) -> None:
    """Write a trained model (on CPU) and its History under `config`'s key, atomically."""
    cfg = Config.of(config)
    save_checked(cfg.path(), dict(config=asdict(cfg), input_shape=data.input_shape,
                                  num_classes=data.num_classes, state_dict=model.state_dict(),
                                  history=history.to_dict()))

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
import time
import warnings
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from . import models as _models
from ._io import cache_dir, file_lock, load_checked, save_checked
from .data import Dataset, Split
from .devices import resolve_device
from .validation import check_float, check_int

CACHE_VERSION = 3  # bump when a model's layout, the training loop or the file format changes
# 3: safetensors + JSON files with the data fingerprint and provenance (no pickles)


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
    # what the run depended on besides its config (see `provenance`): versions, device, threads
    provenance: dict = field(default_factory=dict)

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


# "100% training accuracy" as Staats et al. print it (Table S1, one decimal): an accuracy
# that rounds to 100.0%, i.e. at least 99.95%. Chapters 0 and 4 use this one definition.
FULL_TRAIN_ACC = 0.9995


def first_full_epoch(history: History, full: float = FULL_TRAIN_ACC) -> int | None:
    """First epoch e with train_acc(e) >= `full` (default: rounds to 100.0%); None if never.

    Epoch 0 is the initial state, so a network that starts at `full` returns 0.
    """
    if not isinstance(history, History):
        raise TypeError(f"history must be an rmtlib.train.History (as returned by `trained`); "
                        f"got {type(history).__name__}")
    full = check_float(full, "full", min=0.0, max=1.0, min_open=True,
                       why="a training accuracy as a fraction, e.g. 0.9995 for 100.0% to one decimal")
    return next((int(e) for e, acc in zip(history.epoch, history.train_acc) if acc >= full), None)


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
        measured (NaN). Epoch 0 is measured on the whole training set ("full" and
        "epoch"; NaN with False).
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
    from .ensemble import autocast, check_training_options, precision_context

    track_train = check_training_options(track_train, precision)
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
def provenance(device=None) -> dict:
    """What a training run depended on besides its config: versions, device, threads.

    Weights differ between devices, library versions and even CPU thread counts (the
    order of floating-point sums changes), so every cached model records this dict and
    `History.provenance` shows it. `device` is the device trained on (None: not known).
    """
    import platform
    import sys
    from datetime import datetime, timezone

    import numpy

    import rmtlib

    dev = resolve_device(device) if device is not None else None
    if dev is not None and dev.type == "cuda":
        name = torch.cuda.get_device_name(dev)
    else:
        name = platform.processor() or platform.machine()
    return dict(
        rmtlib=rmtlib.__version__, torch=torch.__version__, numpy=numpy.__version__,
        python=platform.python_version(), platform=platform.platform(),
        device=str(dev) if dev is not None else "not recorded", device_name=name,
        threads=torch.get_num_threads(), cuda=torch.version.cuda,
        cudnn=torch.backends.cudnn.version() if dev is not None and dev.type == "cuda" else None,
        deterministic=torch.are_deterministic_algorithms_enabled(),
        created=datetime.now(timezone.utc).isoformat(timespec="seconds"),
        executable=sys.executable,
    )


def training_provenance(device, wall_s: float, members: int = 1) -> dict:
    """`provenance(device)` plus the wall time of the training run that produced a network.

    `train_wall_s` is the wall time of the whole run (for `trained`, training only; for an
    ensemble of `trained_many`, also loading the members' data); networks trained together
    as one ensemble share it, `trained_together` (their number) and one
    `training_run` id, so that a grid's training time is the sum over distinct runs.
    """
    import uuid

    return dict(provenance(device), train_wall_s=round(float(wall_s), 3), trained_together=int(members),
                training_run=uuid.uuid4().hex[:12])


def _optional_int(value, name, minimum, why=""):
    return None if value is None else check_int(value, name, min=minimum, why=why)


def _plain_option(value, where):
    """A model option as a plain, hashable JSON value (lists become tuples)."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain_option(v, where) for v in value)
    if isinstance(value, (np.generic, torch.Tensor)) and getattr(value, "ndim", 0) == 0:
        value = value.item()
    if value is None or isinstance(value, (str, bool, int, float)):
        if isinstance(value, float) and not math.isfinite(value):
            raise ValueError(f"{where} must be finite; got {value}")
        return value
    raise TypeError(f"{where} must be a number, string, bool, None or a list of those; "
                    f"got {type(value).__name__}")


@dataclass(frozen=True)
class Config:
    """Everything that determines a trained network; its hash keys the model cache.

    Every field is checked when the Config is made (ValueError/TypeError saying what
    to pass). Integers must be integers: `seed=1.5`, `seed="0"` and `n_train=100.0` are
    refused; numpy and torch integer scalars are accepted and stored as int, numpy and
    torch float scalars for `noise` as float.
    """

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
        self._check()

    def _check(self) -> None:
        import inspect

        from .data import NAMES

        put = lambda name, value: object.__setattr__(self, name, value)  # noqa: E731 (frozen)
        if not isinstance(self.data, str) or self.data not in NAMES:
            raise ValueError(f"unknown data set {self.data!r}; choose one of {', '.join(NAMES)}")
        if not isinstance(self.model, str) or self.model not in _models.MODELS:
            raise ValueError(f"unknown model {self.model!r}; choose one of {', '.join(_models.MODELS)}")
        if not isinstance(self.schedule, str) or self.schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {self.schedule!r}; choose one of {', '.join(SCHEDULES)} "
                             "(a Config names its schedule)")
        put("noise", check_float(self.noise, "noise", min=0, max=1,
                                 why="the fraction of shuffled training labels, e.g. noise=0.4"))
        put("seed", check_int(self.seed, "seed", min=0, why="e.g. seed=0"))
        put("n_train", _optional_int(self.n_train, "n_train", 1, "pass e.g. n_train=5000, or None for all"))
        put("epochs", _optional_int(self.epochs, "epochs", 0, "pass e.g. epochs=40, 0 for the initial "
                                                            "weights, None for the schedule's"))
        put("n_val", check_int(self.n_val, "n_val", min=0))
        put("batch_size", _optional_int(self.batch_size, "batch_size", 1, "None for the schedule's"))
        opts = self.model_options
        if isinstance(opts, dict):
            opts = tuple(opts.items())
        if not isinstance(opts, (tuple, list)) or not all(isinstance(p, (tuple, list)) and len(p) == 2
                                                          for p in opts):
            raise TypeError(f"model_options must be a dict of keyword arguments of the model "
                            f"builder; got {self.model_options!r}")
        builder = getattr(_models, self.model, None)  # the function named after the model
        params = inspect.signature(builder).parameters.values() if callable(builder) else ()
        allowed = sorted(p.name for p in params if p.kind == p.KEYWORD_ONLY and p.name != "image_size")
        for key, _ in opts:
            if callable(builder) and key not in allowed:
                raise ValueError(f"model_options key {key!r} is not an option of {self.model}; "
                                 f"valid: {allowed}")
        put("model_options", tuple(sorted((k, _plain_option(v, f"model_options[{k!r}]")) for k, v in opts)))

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
        """Check every field again (they were checked when the Config was made); returns self."""
        self._check()
        return self

    def key(self) -> str:
        text = json.dumps({"v": CACHE_VERSION, **asdict(self)}, sort_keys=True, default=str)
        return hashlib.sha256(text.encode()).hexdigest()[:16]

    def path(self) -> Path:
        tag = f"{self.model}-{self.data}-{self.schedule}-p{int(round(100 * self.noise)):03d}-s{self.seed}"
        return cache_dir("models") / f"{tag}-{self.key()}.safetensors"

    def data_fingerprint(self) -> dict:
        """The data fingerprint fields this config fixes (see `rmtlib.data.expected_fingerprint`)."""
        from . import data as _data

        return _data.expected_fingerprint(self.data, noise=self.noise, seed=self.seed,
                                          n_train=self.n_train, n_val=self.n_val)

    def check_data(self, data: Dataset) -> dict:
        """Refuse a Dataset that is not the one this config loads; returns its fingerprint."""
        if not isinstance(data, Dataset):
            raise TypeError(f"data must be an rmtlib.data.Dataset; got {type(data).__name__}")
        how = (f"pass data=rmtlib.data.load({self.data!r}, noise={self.noise}, seed={self.seed}, "
               f"n_train={self.n_train}, n_val={self.n_val}) (or config.load_data()), or omit data= "
               "to load it from the config")
        if "labels_sha256" not in data.info or "indices_sha256" not in data.info:
            raise ValueError(f"data= has no record of how it was made (not from rmtlib.data.load); {how}")
        fp = data.fingerprint()
        if fp["labels_sha256"] != data.info["labels_sha256"]:
            raise ValueError(f"the labels of data= were changed after rmtlib.data.load made it; {how}")
        diffs = [f"{k} {fp[k]!r} (the config needs {v!r})" for k, v in self.data_fingerprint().items()
                 if fp[k] != v]
        if diffs:
            raise ValueError(f"data= does not match the config: {'; '.join(diffs)}. A model trained on "
                             f"it would be cached under this config's key; {how}")
        return fp

    def load_data(self, device=None) -> Dataset:
        from . import data as _data

        return _data.load(self.data, noise=self.noise, seed=self.seed, n_train=self.n_train,
                          n_val=self.n_val, device=device)

    def build_model(self, input_shape, classes) -> nn.Module:
        torch.manual_seed(self.seed)  # the initial weights depend on the seed only
        return _models.build(self.model, tuple(input_shape), classes, **dict(self.model_options))


def trained(config, *, data: Dataset | None = None, device=None, progress: bool = True,
            retrain: bool = False):
    """A trained network for `config`, from the cache when possible (trains on a miss).

    The cache file is keyed by a hash of the whole config and holds the weights
    (safetensors: loading it runs no code), the History, the fingerprint of the data
    trained on and the provenance (versions, device, threads); it is written atomically
    with a checksum. A damaged or mismatching file is retrained, never loaded. `data=`
    must be the data set the config loads (checked by its fingerprint). Two processes
    asking for the same config: the second waits for the first (file lock) and loads
    its result. A model that cannot be written to the cache (read-only or full folder)
    is returned with a warning. `epochs=0` gives the random initialisation.
    Returns (model on CPU in eval mode, History).
    """
    cfg = Config.of(config).validate()
    if data is not None:
        cfg.check_data(data)
    if not retrain:
        hit = load_cached(cfg, data=data)
        if hit is not None:
            return hit
    path = cfg.path()
    with file_lock(path, what=f"the model {path.name}"):
        if not retrain and path.exists():  # another process may have trained it meanwhile
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # a damaged file was reported above
                hit = load_cached(cfg, data=data)
            if hit is not None:
                return hit
        ds = data if data is not None else cfg.load_data()
        model = cfg.build_model(ds.input_shape, ds.num_classes)
        t0 = time.perf_counter()
        history = train(model, ds, schedule=cfg.schedule, epochs=cfg.epochs, seed=cfg.seed,
                        device=device, batch_size=cfg.batch_size, progress=progress)
        history.provenance = training_provenance(device if device is not None else "auto",
                                                 time.perf_counter() - t0)
        model = model.cpu().eval()
        save_cached(cfg, model, history, ds)
    return model, history


def _to_json(x):
    """A History value as plain JSON (numpy and torch scalars/arrays become numbers/lists)."""
    if isinstance(x, dict):
        return {str(k): _to_json(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_to_json(v) for v in x]
    if isinstance(x, torch.Tensor):
        return _to_json(x.detach().cpu().tolist())
    if isinstance(x, (np.ndarray, np.generic)):
        return _to_json(x.tolist())
    if x is None or isinstance(x, (str, bool, int, float)):
        return x
    return repr(x)  # an object a callback recorded: kept as its text


def _history_from_json(d: dict) -> History:
    h = History.from_dict(d)
    h.extra = {k: [tuple(p) if isinstance(p, list) and len(p) == 2 else p for p in v]
               for k, v in (h.extra or {}).items()}
    return h


def load_cached(config, *, data: Dataset | None = None):
    """(model, History) for `config` from the model cache, or None on a miss.

    A damaged file, one written by another cache version, for another config, or
    trained on other data than the config loads (or than `data`, when given) is
    reported with a warning and treated as a miss. Nothing in the file is executed.
    """
    cfg = Config.of(config).validate()
    path = cfg.path()
    if not path.exists():
        return None
    try:
        tensors, meta = load_checked(path)
        if meta.get("kind") != "model" or meta.get("cache_version") != CACHE_VERSION:
            raise ValueError(f"not a model of cache version {CACHE_VERSION}")
        if meta.get("config") != _to_json(asdict(cfg)):
            raise ValueError("config in file differs")
        fp = meta.get("data") or {}
        diffs = sorted(k for k, v in cfg.data_fingerprint().items() if fp.get(k) != v)
        if data is not None:
            got = data.fingerprint()
            diffs += sorted(k for k in ("labels_sha256", "indices_sha256", "input_shape", "num_classes")
                            if fp.get(k) != got[k])
        if diffs:
            raise ValueError(f"trained on other data ({', '.join(diffs)} differ)")
        model = cfg.build_model(meta["input_shape"], meta["num_classes"])
        model.load_state_dict(tensors)
        history = _history_from_json(meta["history"])
        history.provenance = dict(meta.get("provenance") or {})
        return model.eval(), history
    except Exception as err:  # damaged, truncated, or from another version: rebuild
        warnings.warn(f"model cache {path.name} unusable ({err}); retraining", stacklevel=2)
        return None


def save_cached(config, model: nn.Module, history: History, data: Dataset) -> None:
    """Write a trained model (on CPU) and its History under `config`'s key, atomically.

    `data` must be the data set the config loads (ValueError otherwise: a model trained
    on other data is never cached under this key). The file records the data's
    fingerprint and `history.provenance` (filled with this process's versions and
    threads if empty). If the cache folder is read-only or full, a warning says the
    model could not be cached and nothing else happens.
    """
    cfg = Config.of(config).validate()
    fp = cfg.check_data(data)
    if not history.provenance:
        history.provenance = provenance(None)
    meta = dict(kind="model", cache_version=CACHE_VERSION, config=_to_json(asdict(cfg)),
                input_shape=list(data.input_shape), num_classes=data.num_classes,
                history=_to_json(history.to_dict()), data=fp, provenance=_to_json(history.provenance))
    path = cfg.path()
    try:
        save_checked(path, model.state_dict(), meta)
    except OSError as err:
        warnings.warn(f"the trained model could not be cached ({type(err).__name__}: {err}); it is "
                      f"returned but not kept, so the next call trains again. Make {path.parent} "
                      "writable (or set RMTLIB_CACHE to a writable folder)", stacklevel=2)

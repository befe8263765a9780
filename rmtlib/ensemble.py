"""Ensembles: K networks of one architecture trained together as one batched model.

A grid of configurations that differ only in seed and label noise (METHODS §5's Fig. 5
protocol: 9 noise levels x 10 seeds x 2 schedules) is K independent trainings of the
same architecture. Stacking the K members' parameters into tensors with a leading
member axis, W[k] of shape (K, out, in), turns every step into a few batched products

    h_k <- relu(h_k W_k^T + b_k)  for all k at once (torch.baddbmm),

a convolution into one grouped convolution with K groups, and every parameter-free
layer (ReLU, pooling, flatten, response norm) into one call on K*B samples. The loss is
the sum over members of each member's mean cross-entropy, so member k's gradient is
exactly the gradient of its own loss; the SGD update (momentum, per-layer weight decay
as `rmtlib.train._param_groups`, the schedule's learning rate) is applied elementwise to
the stacked tensors and is therefore the same update as K separate runs.

Each member keeps its own initialisation (built as `Config.build_model` builds it), its own
noisy labels, its own seeded batch order (a `torch.Generator` seeded with its seed
draws one permutation per epoch, exactly as `rmtlib.train.train`), its own History and
its own callbacks; a member that stops early leaves the stack and the others go on.
On CPU in float64 a member equals the same configuration trained alone to rounding.

On CUDA the step (forward, backward, update) is captured once in a CUDA graph and
replayed; nothing in an epoch waits for the host (the loss check, the accuracy counts
and the evaluation stay on the device until the epoch ends). Matrix products use TF32
unless `precision="float32"`; `precision="bfloat16"` runs forward and loss under
bfloat16 autocast. A GPU that runs out of memory for K members makes the ensemble
split into chunks (one warning).
"""
from __future__ import annotations

import contextlib
import copy
import math
import time
import warnings
from dataclasses import fields, replace

import torch
import torch.nn.functional as F
from torch import nn

from .data import Dataset, Split
from .devices import resolve_device

PRECISIONS = ("tf32", "float32", "bfloat16")
METHODS = ("auto", "bmm", "vmap")
VARYING_FIELDS = ("seed", "noise")  # everything else in a Config must be shared by an ensemble


def check_training_options(track_train, precision) -> str | bool:
    """Validate `track_train` ('full' or True, 'epoch', False) and `precision`; returns the
    normalised `track_train`. Shared by `rmtlib.train.train` and `train_ensemble`."""
    if track_train is True:
        track_train = "full"
    if track_train not in ("full", "epoch", False):
        raise ValueError(f"track_train must be 'full' (True), 'epoch' or False; got {track_train!r}")
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    return track_train


# --------------------------------------------------------------------------- precision
@contextlib.contextmanager
def precision_context(precision: str, device: torch.device):
    """Matrix-product precision while training on `device` (restored afterwards).

    "tf32" (default): on CUDA, float32 products and convolutions use TF32 tensor cores
    (10-bit mantissa inputs, float32 accumulation); on the CPU nothing changes.
    "float32": strict IEEE float32 everywhere. "bfloat16": forward and loss under
    `torch.autocast(dtype=torch.bfloat16)` (weights, gradients and update stay float32).
    """
    if precision not in PRECISIONS:
        raise ValueError(f"precision must be one of {PRECISIONS}; got {precision!r}")
    if device.type != "cuda":
        yield
        return
    old = (torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32)
    tf32 = precision != "float32"
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = tf32
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = old


def autocast(precision: str, device: torch.device):
    """bfloat16 autocast for precision="bfloat16", else a no-op context."""
    if precision == "bfloat16":
        return torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False)
    return contextlib.nullcontext()


# --------------------------------------------------------------------------- the stacked model
def _supports_bmm(model: nn.Module) -> bool:
    """True when `model` is an nn.Sequential of Linear / Conv2d / parameter-free modules."""
    if not isinstance(model, nn.Sequential):
        return False
    for m in model.children():
        if isinstance(m, nn.Linear):
            continue
        if isinstance(m, nn.Conv2d) and m.padding_mode == "zeros":
            continue
        if list(m.parameters()) or list(m.buffers()):
            return False
    return True


def _check_same_architecture(members) -> None:
    ref = members[0]
    ref_shapes = {k: (tuple(v.shape), v.dtype) for k, v in ref.state_dict().items()}
    ref_types = [type(m).__name__ for m in ref.modules()]
    for i, m in enumerate(members[1:], start=1):
        shapes = {k: (tuple(v.shape), v.dtype) for k, v in m.state_dict().items()}
        if shapes != ref_shapes or [type(x).__name__ for x in m.modules()] != ref_types:
            diff = sorted(map(str, set(shapes.items()) ^ set(ref_shapes.items())))[:3]
            raise ValueError(f"ensemble members differ in model: member {i} has another architecture "
                             f"or dtype than member 0 ({diff or 'module types differ'}); an ensemble "
                             "trains copies of one architecture (group configs by model)")


class StackedModel:
    """K members of one architecture as stacked parameters `params[name]` of shape (K, ...).

    With method="bmm" the weights of Linear layers are stored transposed, (K, in, out):
    `baddbmm` with that layout runs forward and backward about twice as fast on the CPU
    as with the transposed view of (K, out, in) (benchmarks/RESULTS.md).

    `forward(params, x)` maps inputs x (K, B, ...) to logits (K, B, classes).
    method="bmm": batched products (Linear -> baddbmm, Conv2d -> grouped conv, other
    layers on K*B samples); method="vmap": `torch.func.functional_call` under
    `torch.vmap` (any architecture).
    """

    def __init__(self, members, method: str = "auto"):
        if method not in METHODS:
            raise ValueError(f"method must be one of {METHODS}; got {method!r}")
        _check_same_architecture(members)
        template = members[0]
        if method == "auto":
            method = "bmm" if _supports_bmm(template) else "vmap"
        if method == "bmm" and not _supports_bmm(template):
            raise ValueError("method='bmm' needs an nn.Sequential of Linear, Conv2d and parameter-free "
                             "layers; use method='vmap'")
        self.method = method
        self.template = copy.deepcopy(template)
        self.names = [n for n, _ in template.named_parameters()]
        self.buffer_names = [n for n, _ in template.named_buffers()]
        self.transposed = set()  # Linear weights stored as (K, in, out): measured 2x faster on CPU
        if method == "bmm":
            self.children = list(self.template.named_children())
            self.transposed = {f"{n}.weight" for n, m in self.children if isinstance(m, nn.Linear)}
        else:
            self._base = copy.deepcopy(template).to("meta")

    def stack(self, members, device, dtype=None):
        """Stacked copies of the members' parameters (leaf tensors) and buffers on `device`."""
        params, buffers = {}, {}
        named = [dict(m.named_parameters()) for m in members]
        for n in self.names:
            t = torch.stack([p[n].detach() for p in named]).to(device)
            if n in self.transposed:
                t = t.transpose(1, 2).contiguous()
            params[n] = (t if dtype is None else t.to(dtype)).requires_grad_(True)
        named_b = [dict(m.named_buffers()) for m in members]
        for n in self.buffer_names:
            buffers[n] = torch.stack([b[n].detach() for b in named_b]).to(device)
        return params, buffers

    def member(self, params, name, pos):
        """Member `pos`'s tensor `name` in the layout of its own module."""
        t = params[name][pos]
        return t.T if name in self.transposed else t

    def train(self, mode: bool = True):
        self.template.train(mode)
        if self.method == "vmap":
            self._base.train(mode)

    def forward(self, params, buffers, x):
        if self.method == "vmap":
            from torch.func import functional_call

            def one(p, b, xb):
                return functional_call(self._base, (p, b), (xb,))

            return torch.vmap(one, randomness="different")(params, buffers, x)
        K, B = x.shape[:2]
        h = x
        for name, m in self.children:
            if isinstance(m, nn.Linear):
                Wt, b = params[f"{name}.weight"], params.get(f"{name}.bias")  # Wt: (K, in, out)
                shape = h.shape
                h3 = h.reshape(K, -1, shape[-1])
                h3 = torch.bmm(h3, Wt) if b is None else torch.baddbmm(b.unsqueeze(1), h3, Wt)
                h = h3.reshape(*shape[:-1], Wt.shape[2])
            elif isinstance(m, nn.Conv2d):
                W, b = params[f"{name}.weight"], params.get(f"{name}.bias")
                C, H, Wd = h.shape[2:]
                hh = h.transpose(0, 1).reshape(B, K * C, H, Wd)
                out = F.conv2d(hh, W.reshape(-1, *W.shape[2:]), None if b is None else b.reshape(-1),
                               m.stride, m.padding, m.dilation, K * m.groups)
                h = out.reshape(B, K, W.shape[1], *out.shape[2:]).transpose(0, 1)
            else:
                y = m(h.reshape(K * B, *h.shape[2:]))
                h = y.reshape(K, B, *y.shape[1:])
        return h


class _Data:
    """A tensor shared by all members (N, ...) or one per member (K, N, ...)."""

    def __init__(self, tensors, device, dtype=None, per_member=False):
        first = tensors[0]
        shared = not per_member and all(t is first or (t.shape == first.shape and torch.equal(t, first))
                                        for t in tensors[1:])
        self.shared = shared
        t = first.unsqueeze(0) if shared else torch.stack(list(tensors))
        if dtype is not None and t.is_floating_point():
            t = t.to(dtype)
        self.t = t.to(device)

    @property
    def n(self):
        return self.t.shape[1]

    def rows(self, idx):
        """idx (K, B) -> (K, B, ...)."""
        if self.shared:
            return self.t[0][idx]
        ar = torch.arange(idx.shape[0], device=idx.device).unsqueeze(1)
        return self.t[ar, idx]

    def block(self, i, j, K):
        """Rows i:j of every member -> (K, j - i, ...)."""
        if self.shared:
            blk = self.t[0, i:j]
            return blk.unsqueeze(0).expand(K, *blk.shape)
        return self.t[:, i:j]

    def keep(self, members):
        if not self.shared:
            self.t = self.t[members]


# --------------------------------------------------------------------------- training
def _member_losses(logits, y):
    """Per-member mean cross-entropy (K,) and per-member correct counts (K,)."""
    K, B, C = logits.shape
    ce = F.cross_entropy(logits.reshape(K * B, C), y.reshape(K * B), reduction="none").reshape(K, B)
    return ce.mean(1), (logits.argmax(-1) == y).sum(1)


@torch.no_grad()
def _evaluate(stack, params, buffers, x: _Data, y: _Data, K: int, batch: int, precision, device):
    """Per-member (correct counts, summed cross-entropy) on one split, on the device."""
    stack.train(False)
    correct = torch.zeros(K, dtype=torch.long, device=device)
    loss = torch.zeros(K, dtype=torch.float64, device=device)
    for i in range(0, x.n, batch):
        j = min(x.n, i + batch)
        xb, yb = x.block(i, j, K), y.block(i, j, K)
        with autocast(precision, device):
            out = stack.forward(params, buffers, xb)
            ce = F.cross_entropy(out.reshape(-1, out.shape[-1]), yb.reshape(-1), reduction="none")
        loss += ce.reshape(K, -1).sum(1).double()
        correct += (out.argmax(-1) == yb).sum(1)
    stack.train(True)
    return correct, loss


def train_ensemble(models, datasets, *, seeds, schedule="regular", epochs: int | None = None,
                   callbacks=None, device=None, batch_size: int | None = None, lr: float | None = None,
                   progress: bool = True, track_train="full", precision: str = "tf32",
                   method: str = "auto", cuda_graph: bool = True, max_members: int | None = None):
    """Train K models of one architecture together, in place; one History per member.

    The same contract as `rmtlib.train.train` for each member k: `models[k]` is trained with
    SGD on `datasets[k].train` (its noisy labels), batch order seeded by `seeds[k]`,
    evaluated on `datasets[k].test` every epoch, `callbacks[k]` (a list) called after every
    epoch; a member whose callback stops it keeps the weights of that epoch while the
    others go on. Parameters shared by all members: schedule, epochs, batch_size, lr.

    datasets : one Dataset per member (or one for all). Members must share the data set,
        the number of training samples and the input shape; identical inputs are stored once.
    track_train : "full" (True): accuracy and loss on the whole training set after each
        epoch; "epoch": the running mean over the epoch's mini-batches (free, Keras'
        convention); False: not measured.
    precision : "tf32" (CUDA default), "float32" (strict), "bfloat16" (autocast); no effect
        on the CPU except "bfloat16".
    method : "auto", "bmm" (batched products), "vmap" (torch.func); see `StackedModel`.
    cuda_graph : on CUDA, capture the step in a CUDA graph.
    max_members : train at most this many members at once (chunks in sequence).

    Returns a list of `rmtlib.train.History`, in the order of `models`.
    """
    from . import train as _train

    models = list(models)
    K = len(models)
    if K == 0:
        raise ValueError("models is empty; give at least one network")
    if isinstance(datasets, Dataset):
        datasets = [datasets] * K
    datasets = list(datasets)
    seeds = [int(s) for s in (seeds if isinstance(seeds, (list, tuple)) else [seeds] * K)]
    callbacks = [list(c or []) for c in (callbacks if callbacks is not None else [None] * K)]
    if not (len(datasets) == len(seeds) == len(callbacks) == K):
        raise ValueError(f"give one dataset, seed and callback list per model: {K} models, "
                         f"{len(datasets)} datasets, {len(seeds)} seeds, {len(callbacks)} callback lists")
    for d in datasets:
        if not isinstance(d, Dataset):
            raise TypeError(f"datasets must be rmtlib.data.Dataset objects; got {type(d).__name__}")
    for field_name, get in (("data", lambda d: d.name), ("n_train", lambda d: len(d.train)),
                            ("input shape", lambda d: d.input_shape), ("classes", lambda d: d.num_classes)):
        values = [get(d) for d in datasets]
        if any(v != values[0] for v in values):
            raise ValueError(f"ensemble members differ in {field_name}: {sorted(set(map(str, values)))}; "
                             "an ensemble trains on one data set (group configs by data and n_train)")
    _check_same_architecture(models)
    track_train = check_training_options(track_train, precision)
    if method not in METHODS:
        raise ValueError(f"method must be one of {METHODS}; got {method!r}")
    for cbs in callbacks:
        for cb in cbs:
            if not callable(getattr(cb, "on_epoch_end", cb)):
                raise TypeError(f"callback {cb!r} is not callable and has no on_epoch_end")
    sched = _train.get_schedule(schedule)
    n_epochs = sched.epochs if epochs is None else epochs
    if int(n_epochs) != n_epochs or n_epochs < 0:
        raise ValueError(f"epochs must be a non-negative integer; got {epochs!r}")
    bs = sched.batch_size if batch_size is None else batch_size
    if int(bs) != bs or bs < 1:
        raise ValueError(f"batch_size must be a positive integer; got {batch_size!r}")
    if max_members is not None and (int(max_members) != max_members or max_members < 1):
        raise ValueError(f"max_members must be a positive integer or None; got {max_members!r}")
    dev = resolve_device(device)
    kw = dict(sched=sched, n_epochs=int(n_epochs), bs=int(bs), lr=lr, progress=progress,
              track_train=track_train, precision=precision, method=method,
              cuda_graph=cuda_graph, device=dev)
    members = list(range(K))
    chunk = K if max_members is None else int(max_members)
    histories = [None] * K
    warned = []
    queue = [members[i : i + chunk] for i in range(0, K, chunk)]
    while queue:
        part = queue.pop(0)
        initial = [copy.deepcopy(models[i].state_dict()) for i in part]
        try:
            hs = _train_group([models[i] for i in part], [datasets[i] for i in part],
                              [seeds[i] for i in part], [callbacks[i] for i in part], **kw)
        except torch.cuda.OutOfMemoryError:
            if len(part) == 1:
                raise
            for i, state in zip(part, initial):
                models[i].load_state_dict(state)
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
            half = (len(part) + 1) // 2
            if not warned:
                warnings.warn(f"out of GPU memory for {len(part)} ensemble members; training them in "
                              f"chunks of at most {half}", RuntimeWarning, stacklevel=2)
                warned.append(True)
            queue[:0] = [part[:half], part[half:]]
            continue
        for i, h in zip(part, hs):
            histories[i] = h
    return histories


def _sgd_setup(stack, template):
    """Weight decay per stacked parameter name, as `rmtlib.train._param_groups` sets it."""
    from . import train as _train

    wd_of = {}
    for group in _train._param_groups(template):
        for p in group["params"]:
            wd_of[id(p)] = float(group["weight_decay"])
    return {n: wd_of.get(id(p), 0.0) for n, p in template.named_parameters()}


def _train_group(models, datasets, seeds, callbacks, *, sched, n_epochs, bs, lr, progress,
                 track_train, precision, method, cuda_graph, device):
    from . import train as _train

    dev = device
    K = len(models)
    stack = StackedModel(models, method)
    dtype = next(models[0].parameters()).dtype
    for m in models:
        m.to(dev)
    params, buffers = stack.stack(models, dev)
    wd = _sgd_setup(stack, models[0])
    bufs = {n: torch.zeros_like(p, requires_grad=False) for n, p in params.items()}
    x = _Data([d.train.x for d in datasets], dev, dtype if datasets[0].train.x.is_floating_point() else None)
    y = _Data([d.train.y for d in datasets], dev, per_member=True)  # each member's noisy labels
    tx = _Data([d.test.x for d in datasets], dev, dtype if datasets[0].test.x.is_floating_point() else None)
    ty = _Data([d.test.y for d in datasets], dev)
    n = x.n
    base_lr = sched.lr if lr is None else float(lr)
    momentum = float(sched.momentum)
    gens = [torch.Generator().manual_seed(int(s)) for s in seeds]
    histories = [_train.History() for _ in range(K)]
    active = list(range(K))  # positions in the original list of the members still in the stack
    eval_batch = max(256, min(2048, (1 << 16) // max(K, 1)))
    use_graph = cuda_graph and dev.type == "cuda"
    lr_t = torch.zeros((), dtype=dtype, device=dev)
    by_decay = {}
    for nme in params:
        by_decay.setdefault(wd[nme], []).append(nme)
    fused = dev.type == "cpu" and hasattr(torch, "_fused_sgd_")

    def sync_member(pos, k):
        with torch.no_grad():
            named = dict(models[k].named_parameters())
            for nme in stack.names:
                named[nme].copy_(stack.member(params, nme, pos))
            named_b = dict(models[k].named_buffers())
            for nme in stack.buffer_names:
                named_b[nme].copy_(buffers[nme][pos])

    def metrics(epoch_stats=None):
        Ka = len(active)
        te = _evaluate(stack, params, buffers, tx, ty, Ka, eval_batch, precision, dev)
        if track_train == "epoch" and epoch_stats is not None:
            tr = epoch_stats
        elif track_train:  # "full", and epoch 0 of "epoch" (no mini-batches yet)
            tr = _evaluate(stack, params, buffers, x, y, Ka, eval_batch, precision, dev)
        else:
            tr = None
        out = torch.stack([te[0].double(), te[1]] + ([tr[0].double(), tr[1].double()] if tr is not None else []))
        vals = out.cpu().tolist()  # the one host synchronisation per epoch
        ntest = tx.n
        rows = []
        for pos in range(Ka):
            row = dict(test_acc=vals[0][pos] / max(ntest, 1), test_loss=vals[1][pos] / max(ntest, 1))
            if tr is not None:
                row.update(train_acc=vals[2][pos] / max(n, 1), train_loss=vals[3][pos] / max(n, 1))
            else:
                row.update(train_acc=math.nan, train_loss=math.nan)
            rows.append(row)
        return rows

    def log(epoch, lr_now, epoch_stats=None):
        for pos, row in enumerate(metrics(epoch_stats)):
            histories[active[pos]].append(epoch=epoch, lr=lr_now, **row)

    # per-epoch running sums (device tensors, updated inside the step)
    acc_correct = torch.zeros(K, dtype=torch.long, device=dev)
    acc_loss = torch.zeros(K, dtype=torch.float64, device=dev)
    last_loss = torch.zeros(K, dtype=torch.float32, device=dev)

    def step(idx):
        """One SGD step of all members on rows idx (K, B)."""
        xb, yb = x.rows(idx), y.rows(idx)
        with autocast(precision, dev):
            logits = stack.forward(params, buffers, xb)
        losses, correct = _member_losses(logits, yb)
        losses.sum().backward()
        with torch.no_grad():
            if fused:  # one pass per parameter: the kernel torch.optim.SGD(fused=True) runs alone
                for decay, names in by_decay.items():
                    torch._fused_sgd_([params[n] for n in names], [params[n].grad for n in names],
                                      [bufs[n] for n in names] if momentum else [], weight_decay=decay,
                                      momentum=momentum, lr=lr_t, dampening=0.0, nesterov=False,
                                      maximize=False, is_first_step=False)  # buffers start at 0: same
            for nme, p in ([] if fused else params.items()):
                g = p.grad
                if wd[nme]:
                    g = g.add(p, alpha=wd[nme])
                if momentum:
                    buf = bufs[nme]
                    buf.mul_(momentum).add_(g)
                    g = buf
                p.sub_(g * lr_t)  # p <- p - lr * (momentum buffer), as torch.optim.SGD
            if track_train == "epoch":
                acc_correct.add_(correct)
                acc_loss.add_(losses.detach().double() * idx.shape[1])
            last_loss.copy_(losses.detach().float())

    # The CUDA paths below (graph capture, TF32/bfloat16) were written on a machine without
    # a GPU; tests/test_ensemble.py::test_cuda_* check them where one is present.
    graph, static_idx = None, None

    def capture():
        nonlocal graph, static_idx
        Ka = len(active)
        static_idx = torch.zeros((Ka, bs), dtype=torch.long, device=dev)
        saved = ({k: v.detach().clone() for k, v in params.items()}, {k: v.clone() for k, v in bufs.items()},
                 acc_correct.clone(), acc_loss.clone())
        side = torch.cuda.Stream()
        side.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up on the real tensors, undone below
                for p in params.values():
                    p.grad = None
                step(static_idx)
        torch.cuda.current_stream().wait_stream(side)
        with torch.no_grad():
            for k, v in saved[0].items():
                params[k].copy_(v)
            for k, v in saved[1].items():
                bufs[k].copy_(v)
            acc_correct.copy_(saved[2])
            acc_loss.copy_(saved[3])
        for p in params.values():
            p.grad = None
        graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(graph):
            step(static_idx)

    with precision_context(precision, dev):
        stack.train(True)
        lr0 = sched.lr_at(0) * base_lr / sched.lr
        log(0, lr0)
        for pos, k in enumerate(active):
            for cb in callbacks[k]:
                if hasattr(cb, "on_train_begin"):
                    sync_member(pos, k)
                    cb.on_train_begin(models[k], histories[k])
        bar = None
        if progress and n_epochs:
            from .progress import progress as _bar

            bar = _bar(total=n_epochs, desc=f"train {sched.name} x{K}", leave=False)
        try:
            for epoch in range(1, n_epochs + 1):
                if not active:
                    break
                lr_now = sched.lr_at(epoch - 1) * base_lr / sched.lr
                lr_t.fill_(lr_now)
                acc_correct.zero_()
                acc_loss.zero_()
                perms = torch.stack([torch.randperm(n, generator=gens[k]) for k in active])
                perms = perms.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else perms.to(dev)
                for i in range(0, n, bs):
                    idx = perms[:, i : i + bs]
                    if use_graph and idx.shape[1] == bs:
                        if graph is None:
                            capture()
                        static_idx.copy_(idx)
                        graph.replay()
                    else:
                        for p in params.values():
                            p.grad = None
                        step(idx)
                        for p in params.values():
                            p.grad = None
                bad = ~torch.isfinite(last_loss)
                stats = (acc_correct, acc_loss) if track_train == "epoch" else None
                if bool(bad.any()):
                    k = active[int(bad.nonzero()[0])]
                    raise FloatingPointError(f"training diverged at epoch {epoch} for ensemble member {k} "
                                             f"(seed {seeds[k]}); lower the learning rate")
                log(epoch, lr_now, stats)
                if bar is not None:
                    bar.update(1)
                stopped = []
                for pos, k in enumerate(active):
                    if callbacks[k]:
                        sync_member(pos, k)
                        stop = [type(cb).__name__ for cb in callbacks[k]
                                if _train._call(cb, epoch, models[k], histories[k])]
                        if stop:
                            histories[k].stopped_epoch, histories[k].stopped_by = epoch, stop[0]
                            stopped.append(pos)
                if stopped:
                    keep = [pos for pos in range(len(active)) if pos not in stopped]
                    active = [active[pos] for pos in keep]
                    if active:
                        sel = torch.tensor(keep, device=dev)
                        with torch.no_grad():
                            for d in (params, bufs, buffers):
                                for nme in list(d):
                                    t = d[nme].detach()[sel].contiguous()
                                    d[nme] = t.requires_grad_(True) if d is params else t
                        for d in (x, y, tx, ty):
                            d.keep(sel)
                        acc_correct, acc_loss, last_loss = acc_correct[sel].clone(), acc_loss[sel].clone(), last_loss[sel].clone()
                        graph = None  # the shapes changed: capture again
        finally:
            if bar is not None:
                bar.close()
    for pos, k in enumerate(active):
        sync_member(pos, k)
    for m in models:
        m.eval()
    return histories


# --------------------------------------------------------------------------- configs and the cache
def _group_key(cfg):
    return tuple((f.name, getattr(cfg, f.name)) for f in fields(cfg) if f.name not in VARYING_FIELDS)


def check_configs(configs):
    """Configs of one ensemble: ValueError naming the first field (besides seed, noise) that differs."""
    from .train import Config

    cfgs = [Config.of(c).validate() for c in configs]
    if not cfgs:
        raise ValueError("configs is empty; give at least one config")
    for f in fields(cfgs[0]):
        if f.name in VARYING_FIELDS:
            continue
        values = [getattr(c, f.name) for c in cfgs]
        if any(v != values[0] for v in values):
            raise ValueError(f"ensemble configs differ in {f.name!r} ({sorted(set(map(repr, values)))}); members "
                             f"of one ensemble may differ only in {' and '.join(VARYING_FIELDS)} "
                             "(use trained_many, which groups a grid into ensembles)")
    return cfgs


def _load_group_data(cfgs):
    """Each member's Dataset; the inputs of members with equal inputs are stored once."""
    out = []
    for cfg in cfgs:
        ds = cfg.load_data()
        if out:
            first = out[0]
            same = lambda a, b: a.x.shape == b.x.shape and torch.equal(a.x, b.x)
            if same(ds.train, first.train):
                ds = replace(ds, train=Split(first.train.x, ds.train.y))
            if same(ds.test, first.test) and torch.equal(ds.test.y, first.test.y):
                ds = replace(ds, test=first.test)
            if same(ds.val, first.val) and torch.equal(ds.val.y, first.val.y):
                ds = replace(ds, val=first.val)
        out.append(ds)
    return out


def train_configs(configs, *, device=None, progress: bool = True, callbacks=None, **options):
    """Train configs that differ only in seed and noise as one ensemble (no cache).

    Each member is built as `Config.build_model` builds it and trained on its own
    `Config.load_data()`. Returns [(model on CPU in eval mode, History)] in order.
    `options` go to `train_ensemble` (precision, method, max_members, track_train, ...).
    """
    cfgs = check_configs(configs)
    data = _load_group_data(cfgs)
    nets = [c.build_model(d.input_shape, d.num_classes) for c, d in zip(cfgs, data)]
    c0 = cfgs[0]
    hists = train_ensemble(nets, data, seeds=[c.seed for c in cfgs], schedule=c0.schedule, epochs=c0.epochs,
                           batch_size=c0.batch_size, device=device, progress=progress,
                           callbacks=callbacks, **options)
    return [(net.cpu().eval(), h) for net, h in zip(nets, hists)], data


def trained_many(configs, *, device=None, progress: bool = True, retrain: bool = False,
                 max_members: int | None = None, **options):
    """Trained networks for a grid of configs: cache hits loaded, misses trained as ensembles.

    Misses that share everything but seed and noise (data set, model, schedule, epochs,
    ...) are trained together (`train_ensemble`), at most `max_members` at once; each
    member is written to the cache under its own key (`rmtlib.train.save_cached`), so a
    partly cached grid trains only what is missing and `trained(cfg)` finds every member.
    Returns [(model on CPU in eval mode, History)] in the order of `configs`.
    """
    from . import train as _train

    cfgs = [_train.Config.of(c).validate() for c in configs]
    results = [None] * len(cfgs)
    misses: dict = {}
    seen: dict = {}
    for i, cfg in enumerate(cfgs):
        if cfg in seen:
            continue
        seen[cfg] = i
        hit = None if retrain else _train.load_cached(cfg)
        if hit is not None:
            results[i] = hit
        else:
            misses.setdefault(_group_key(cfg), []).append(i)
    groups = list(misses.values())
    it = groups
    if progress and len(groups) > 1:
        from .progress import progress as _bar

        it = _bar(groups, desc="ensembles", leave=False)
    for idxs in it:
        chunk = len(idxs) if max_members is None else int(max_members)
        for s in range(0, len(idxs), chunk):
            part = idxs[s : s + chunk]
            t0 = time.perf_counter()
            trained, data = train_configs([cfgs[i] for i in part], device=device, progress=progress, **options)
            # where and how long they were trained: torch, device, threads, the run's wall time
            # (data loading included here: the members' data are loaded inside train_configs)
            prov = _train.training_provenance(resolve_device(device), time.perf_counter() - t0, len(part))
            for i, (net, hist), ds in zip(part, trained, data):
                if not hist.provenance:
                    hist.provenance = dict(prov)
                _train.save_cached(cfgs[i], net, hist, ds)
                results[i] = (net, hist)
    for i, cfg in enumerate(cfgs):
        if results[i] is None:
            results[i] = results[seen[cfg]]
    return results

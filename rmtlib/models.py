"""The networks of the book: MLP1024, miniAlexNet, LeNet, and Meng & Yao's NN1/NN2.

METHODS §7 (MLP1024, miniAlexNet, Glorot-uniform init) and §6 (NN1, NN2).
A layer that should get L2 regularisation carries the attribute `l2` (the Keras
strength `lambda` of a penalty `lambda * ||W||^2`); `rmtlib.train` turns it into
per-layer weight decay.
"""
from __future__ import annotations

from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

INITS = ("glorot", "default")


def glorot_init_(model: nn.Module) -> nn.Module:
    """Glorot-uniform weights and zero biases for every Linear and Conv layer (METHODS §7)."""
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv1d, nn.Conv2d, nn.Conv3d)):
            nn.init.xavier_uniform_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def _apply_init(model: nn.Module, init: str) -> nn.Module:
    if init not in INITS:
        raise ValueError(f"unknown init {init!r}; choose one of {INITS}")
    return glorot_init_(model) if init == "glorot" else model  # "default": PyTorch's own


def _check_positive_ints(name, values):
    values = list(values)
    if not values or any(int(v) != v or v < 1 for v in values):
        raise ValueError(f"{name} must be positive integers; got {values!r}")
    return [int(v) for v in values]


def mlp(widths, *, init: str = "glorot") -> nn.Sequential:
    """Fully connected ReLU network `widths = [in, hidden..., classes]` (flattens its input).

    MLP1024 of Staats et al. is `mlp([in, 1024, 512, 512, classes])`. The softmax of the
    output lives in the cross-entropy loss.
    """
    widths = _check_positive_ints("widths", widths)
    if len(widths) < 2:
        raise ValueError(f"widths needs at least [in, out]; got {widths}")
    layers: list = [("flatten", nn.Flatten())]
    hidden = len(widths) - 2
    for i, (a, b) in enumerate(zip(widths[:-1], widths[1:])):
        if i < hidden:
            layers += [(f"fc{i + 1}", nn.Linear(a, b)), (f"relu{i + 1}", nn.ReLU())]
        else:
            layers.append(("out", nn.Linear(a, b)))
    return _apply_init(nn.Sequential(OrderedDict(layers)), init)


def mlp1024(in_features: int = 784, classes: int = 10, *, init: str = "glorot") -> nn.Sequential:
    """MLP1024 of Staats et al.: dense [in, 1024, 512, 512, classes] (METHODS §7)."""
    return mlp([in_features, 1024, 512, 512, classes], init=init)


class TFLocalResponseNorm(nn.Module):
    """TensorFlow's `tf.nn.local_response_normalization` (METHODS §7).

    y_d = x_d / (bias + alpha * sum_{|j-d| <= r} x_j^2)^beta over channels j. PyTorch's
    `nn.LocalResponseNorm(size, alpha', beta, k)` divides alpha' by the window size, so the
    equivalent there is size = 2r + 1, alpha' = alpha * size; this module computes the same
    with a cumulative sum over channels, several times faster on CPU than PyTorch's
    avg_pool3d-based layer.
    """

    def __init__(self, depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0, beta: float = 0.5):
        super().__init__()
        self.depth_radius, self.bias, self.alpha, self.beta = int(depth_radius), float(bias), float(alpha), float(beta)

    def forward(self, x):
        r = self.depth_radius
        sq = F.pad(x * x, (0, 0, 0, 0, r + 1, r))  # channel axis of (B, C, H, W)
        cs = sq.cumsum(dim=1)
        window = cs[:, 2 * r + 1 :] - cs[:, : -(2 * r + 1)]
        return x / (self.bias + self.alpha * window) ** self.beta

    def extra_repr(self):
        return f"depth_radius={self.depth_radius}, bias={self.bias}, alpha={self.alpha}, beta={self.beta}"


def tf_local_response_norm(depth_radius: int = 5, bias: float = 1.0, alpha: float = 1.0,
                           beta: float = 0.5) -> TFLocalResponseNorm:
    """TensorFlow-style local response normalization (see `TFLocalResponseNorm`)."""
    return TFLocalResponseNorm(depth_radius, bias, alpha, beta)


def mini_alexnet(in_channels: int = 3, classes: int = 10, *, image_size: int = 32,
                 init: str = "glorot", channels=(300, 150), dense=(384, 192),
                 l2: float = 1e-4) -> nn.Sequential:
    """miniAlexNet of Staats et al. / Zhang et al. (METHODS §7).

    conv 300 5x5 - maxpool 3x3/2 - LRN - conv 150 5x5 - maxpool 3x3/2 - LRN - flatten -
    dense 384 - dense 192 - dense classes; ReLU after every conv and hidden dense layer;
    'same' padding as in TensorFlow; LRN with depth radius 5, bias 1, alpha 1, beta 0.5;
    L2 strength `l2` on the two hidden dense layers. `channels` and `dense` can be made
    smaller for quick CPU runs.
    """
    in_channels, classes, image_size = _check_positive_ints("in_channels, classes, image_size",
                                                            (in_channels, classes, image_size))
    c1, c2 = _check_positive_ints("channels", channels)
    d1, d2 = _check_positive_ints("dense", dense)
    side = image_size
    for _ in range(2):  # two 3x3/2 'same' max pools
        side = (side + 2 - 3) // 2 + 1
    fc1, fc2 = nn.Linear(c2 * side * side, d1), nn.Linear(d1, d2)
    fc1.l2 = fc2.l2 = float(l2)
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, c1, 5, padding=2)), ("relu1", nn.ReLU()),
        ("pool1", nn.MaxPool2d(3, stride=2, padding=1)), ("norm1", tf_local_response_norm()),
        ("conv2", nn.Conv2d(c1, c2, 5, padding=2)), ("relu2", nn.ReLU()),
        ("pool2", nn.MaxPool2d(3, stride=2, padding=1)), ("norm2", tf_local_response_norm()),
        ("flatten", nn.Flatten()),
        ("fc1", fc1), ("relu3", nn.ReLU()),
        ("fc2", fc2), ("relu4", nn.ReLU()),
        ("out", nn.Linear(d2, classes)),
    ]))
    return _apply_init(model, init)


def lenet(in_channels: int = 1, classes: int = 10, *, image_size: int = 28,
          init: str = "default") -> nn.Sequential:
    """LeNet-5 with ReLU and max pooling: conv 6 5x5 - pool - conv 16 5x5 - pool - 120 - 84 - classes."""
    in_channels, classes, image_size = _check_positive_ints("in_channels, classes, image_size",
                                                            (in_channels, classes, image_size))
    side = ((image_size // 2) - 4) // 2  # conv1 keeps the size (padding 2), conv2 removes 4
    if side < 1:
        raise ValueError(f"image_size={image_size} is too small for LeNet (needs >= 12)")
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(in_channels, 6, 5, padding=2)), ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(6, 16, 5)), ("relu2", nn.ReLU()), ("pool2", nn.MaxPool2d(2)),
        ("flatten", nn.Flatten()),
        ("fc1", nn.Linear(16 * side * side, 120)), ("relu3", nn.ReLU()),
        ("fc2", nn.Linear(120, 84)), ("relu4", nn.ReLU()),
        ("out", nn.Linear(84, classes)),
    ]))
    return _apply_init(model, init)


def nn1(in_features: int = 100, classes: int = 10, *, init: str = "default") -> nn.Sequential:
    """NN1 of Meng & Yao: 100 -> 1024 -> 512 -> 384 -> 192 -> K, ReLU, PyTorch default init."""
    return mlp([in_features, 1024, 512, 384, 192, classes], init=init)


def nn2(in_features: int = 2048, classes: int = 10, *, init: str = "default") -> nn.Sequential:
    """NN2 of Meng & Yao: 2048 -> 1024 -> 512 -> K, ReLU, PyTorch default init."""
    return mlp([in_features, 1024, 512, classes], init=init)


# --------------------------------------------------------------------------- Heitmann's zoo
# The architectures of Heitmann's redundancy study (METHODS §9, its Fig. 1): LeNet-300-100,
# Conv-2 and Conv-6 (VGG-like, Frankle & Carbin) and VGG19; Gaussian Glorot initialisation.
VGG_PLANS = {
    "conv2": (64, 64, "M"),
    "conv6": (64, 64, "M", 128, 128, "M", 256, 256, "M"),
    "vgg19": (64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M",
              512, 512, 512, 512, "M", 512, 512, 512, 512, "M"),
}
HEITMANN_INITS = INITS + ("glorot_normal",)


def _heitmann_init(model: nn.Module, init: str) -> nn.Module:
    """Glorot-normal (the study's "Gaussian Glorot") or one of INITS; zero biases."""
    if init != "glorot_normal":
        if init not in HEITMANN_INITS:
            raise ValueError(f"unknown init {init!r}; choose one of {HEITMANN_INITS}")
        return _apply_init(model, init)
    for module in model.modules():
        if isinstance(module, (nn.Linear, nn.Conv2d)):
            nn.init.xavier_normal_(module.weight)
            if module.bias is not None:
                nn.init.zeros_(module.bias)
    return model


def lenet_300_100(in_features: int = 784, classes: int = 10, *, hidden=(300, 100),
                  init: str = "glorot_normal") -> nn.Sequential:
    """LeNet-300-100 (LeCun et al. 1998) as in Heitmann's study: dense [in, 300, 100, classes].

    The same network as `mlp([in, 300, 100, classes])` (layers fc1, fc2, out), with the
    study's Gaussian Glorot initialisation by default.
    """
    h = _check_positive_ints("hidden", hidden)
    return _heitmann_init(mlp([in_features, *h, classes], init="default"), init)


def vgg_like(plan, in_channels: int = 3, classes: int = 10, *, image_size: int = 32,
             width: float = 1.0, dense=(256, 256), avgpool: bool = False, batchnorm: bool = False,
             init: str = "glorot_normal") -> nn.Sequential:
    """A VGG-style network from a plan of channel counts and "M" (2x2 max pool).

    3x3 convolutions with padding 1 (conv1, conv2, ...), ReLU after each (BatchNorm before it
    with `batchnorm`), max pools with ceil_mode (so 28x28 inputs survive five pools), then
    optionally a global average pool, flatten, dense layers fc1, fc2, ... with ReLU, and the
    output layer `out`. `width` multiplies every channel count (at least 1 channel), for
    quick CPU runs.
    """
    in_channels, classes, image_size = _check_positive_ints("in_channels, classes, image_size",
                                                            (in_channels, classes, image_size))
    if not (isinstance(width, (int, float)) and width > 0):
        raise ValueError(f"width must be a positive number (a multiplier of the channel counts); got {width!r}")
    dense = _check_positive_ints("dense", dense)
    layers, c, side, i = [], in_channels, image_size, 0
    for item in plan:
        if item == "M":
            side = -(-side // 2)
            layers.append((f"pool{i}", nn.MaxPool2d(2, ceil_mode=True)))
            continue
        i += 1
        out = max(1, int(round(item * width)))
        layers.append((f"conv{i}", nn.Conv2d(c, out, 3, padding=1)))
        if batchnorm:
            layers.append((f"bn{i}", nn.BatchNorm2d(out)))
        layers.append((f"relu{i}", nn.ReLU()))
        c = out
    if avgpool:
        layers.append(("avgpool", nn.AdaptiveAvgPool2d(1)))
        side = 1
    layers.append(("flatten", nn.Flatten()))
    features = c * side * side
    for j, d in enumerate(dense, start=1):
        layers += [(f"fc{j}", nn.Linear(features, d)), (f"relu_fc{j}", nn.ReLU())]
        features = d
    layers.append(("out", nn.Linear(features, classes)))
    return _heitmann_init(nn.Sequential(OrderedDict(layers)), init)


def conv2(in_channels: int = 3, classes: int = 10, *, image_size: int = 32, width: float = 1.0,
          dense=(256, 256), init: str = "glorot_normal") -> nn.Sequential:
    """Conv-2 (Frankle & Carbin; Heitmann Fig. 1): conv 64, 64, pool - dense 256, 256, classes."""
    return vgg_like(VGG_PLANS["conv2"], in_channels, classes, image_size=image_size, width=width,
                    dense=dense, init=init)


def conv6(in_channels: int = 3, classes: int = 10, *, image_size: int = 32, width: float = 1.0,
          dense=(256, 256), init: str = "glorot_normal") -> nn.Sequential:
    """Conv-6: conv 64, 64, pool, 128, 128, pool, 256, 256, pool - dense 256, 256, classes."""
    return vgg_like(VGG_PLANS["conv6"], in_channels, classes, image_size=image_size, width=width,
                    dense=dense, init=init)


def vgg19(in_channels: int = 3, classes: int = 10, *, image_size: int = 32, width: float = 1.0,
          dense=(512, 512), batchnorm: bool = True, init: str = "glorot_normal") -> nn.Sequential:
    """VGG19 for 32x32 images as in Heitmann Fig. 1: 16 convs in 5 pooled stages, global
    average pool, dense 512, 512, classes. BatchNorm after each conv by default (the study
    trains it with SGD at learning rate 0.1, which a plain VGG19 does not survive)."""
    return vgg_like(VGG_PLANS["vgg19"], in_channels, classes, image_size=image_size, width=width,
                    dense=dense, avgpool=True, batchnorm=batchnorm, init=init)


MODELS = ("mlp1024", "mini_alexnet", "lenet", "nn1", "nn2", "lenet_300_100", "conv2", "conv6", "vgg19")
HEITMANN_CONV = {"conv2": conv2, "conv6": conv6, "vgg19": vgg19}


def build(name: str, input_shape, classes: int, *, init: str | None = None, **options) -> nn.Module:
    """Build a model of the zoo by name for inputs of `input_shape` (without the batch axis).

    `init` defaults to each model's paper choice: Glorot for MLP1024 and miniAlexNet
    (Staats et al.), PyTorch's default for LeNet, NN1 and NN2 (Meng & Yao).
    """
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    shape = tuple(int(s) for s in input_shape)
    features = int(torch.tensor(shape).prod())
    kw = dict(options)
    if init is not None:
        kw["init"] = init
    if name == "mlp1024":
        return mlp1024(features, classes, **kw)
    if name in ("nn1", "nn2"):
        return (nn1 if name == "nn1" else nn2)(features, classes, **kw)
    if name == "lenet_300_100":
        return lenet_300_100(features, classes, **kw)
    if len(shape) != 3 or shape[1] != shape[2]:
        raise ValueError(f"{name} needs square images (C, H, H); got input shape {shape}")
    if name in HEITMANN_CONV:
        return HEITMANN_CONV[name](shape[0], classes, image_size=shape[1], **kw)
    maker = mini_alexnet if name == "mini_alexnet" else lenet
    return maker(shape[0], classes, image_size=shape[1], **kw)


def count_parameters(model: nn.Module) -> int:
    """Number of trainable parameters."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


PRETRAINED = ("alexnet", "vgg19")


def pretrained(name: str, weights=None) -> nn.Module:
    """A torchvision ImageNet network (AlexNet or VGG19) with pretrained weights.

    `weights`: a path to a saved state_dict (works offline), or None for torchvision's
    own download (needs internet the first time; then cached in the torch hub folder).
    """
    import torchvision

    if name not in PRETRAINED:
        raise ValueError(f"unknown pretrained model {name!r}; choose one of {PRETRAINED}")
    builder = getattr(torchvision.models, name)
    if weights is None:
        try:
            return builder(weights="DEFAULT").eval()
        except Exception as err:  # offline: no download possible
            raise FileNotFoundError(
                f"pretrained {name} weights could not be downloaded ({type(err).__name__}). On a "
                "machine with internet run `torchvision.models.%s(weights='DEFAULT')` once, or "
                "pass weights= a state_dict file (torch.save(model.state_dict(), path))." % name
            ) from err
    from pathlib import Path

    path = Path(weights)
    if not path.is_file():
        raise FileNotFoundError(f"weights file {path} does not exist; pass a state_dict saved with torch.save")
    model = builder(weights=None)
    model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
    return model.eval()

"""The conv4 network of Finn et al. (2017), with stable layer names.

Four blocks ``conv1`` .. ``conv4`` (each conv -> batch norm -> ReLU [-> max pool]) and a
linear ``head``. The module paths are the layer labels that probes record, so recording
``conv2`` gives that block's output (after ReLU and pooling).

Two variants, as in cbfinn/maml:

* Omniglot: 64 filters, 3x3, stride 2, TF ``SAME`` padding, no pooling
  (28 -> 14 -> 7 -> 4 -> 2), spatial mean to 64 features, head weights N(0, 1).
* Mini-ImageNet: 32 filters, stride 1, 2x2 max pool (84 -> 42 -> 21 -> 10 -> 5),
  flatten to 800 features, Xavier head.

Conv weights are Xavier (Glorot) uniform, conv and head biases 0.
"""
import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import MAMLConfig
from .errors import TrainingError
from .norm import BatchNormNoScale

__all__ = ["ConvBlock", "Conv4", "build_model", "same_padding"]

HEAD_INITS = ("normal", "xavier")
FEATURES = ("mean", "flatten")


def same_padding(size: int, kernel: int, stride: int) -> tuple[int, int]:
    """TF ``SAME`` padding (before, after) for one spatial dimension.

    The output has ``ceil(size / stride)`` positions; an odd total puts the extra
    row or column after (bottom, right), as TensorFlow does.

    Examples
    --------
    >>> same_padding(28, 3, 2), same_padding(84, 3, 1)
    ((0, 1), (1, 1))
    """
    out = math.ceil(size / stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2


class ConvBlock(nn.Module):
    """conv 3x3 (TF ``SAME`` padding) -> :class:`BatchNormNoScale` -> ReLU [-> max pool 2x2].

    Parameters
    ----------
    in_channels, out_channels : int
        Channels in and out.
    stride : int
        Convolution stride (2 for Omniglot, 1 for Mini-ImageNet).
    pool : bool
        Whether a 2x2 max pool (stride 2, ``VALID``) follows the ReLU.

    Examples
    --------
    >>> import torch
    >>> block = ConvBlock(1, 64, stride=2, pool=False)
    >>> tuple(block(torch.zeros(4, 1, 28, 28)).shape)
    (4, 64, 14, 14)
    >>> [name for name, _ in block.named_children()]
    ['conv', 'norm', 'relu']
    """

    def __init__(self, in_channels: int, out_channels: int, stride: int, pool: bool,
                 kernel_size: int = 3):
        super().__init__()
        self.stride = int(stride)
        self.kernel_size = int(kernel_size)
        self.conv = nn.Conv2d(in_channels, out_channels, kernel_size, stride=stride, padding=0)
        self.norm = BatchNormNoScale(out_channels, eps=1e-3)
        self.relu = nn.ReLU()
        if pool:
            self.pool = nn.MaxPool2d(2, stride=2)
        nn.init.xavier_uniform_(self.conv.weight)
        nn.init.zeros_(self.conv.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        top, bottom = same_padding(x.shape[-2], self.kernel_size, self.stride)
        left, right = same_padding(x.shape[-1], self.kernel_size, self.stride)
        x = self.conv(F.pad(x, (left, right, top, bottom)))
        x = self.relu(self.norm(x))
        if hasattr(self, "pool"):
            x = self.pool(x)
        return x


class Conv4(nn.Module):
    """Four :class:`ConvBlock` s and a linear head (Finn et al., 2017).

    Parameters
    ----------
    n_way : int
        Number of output classes.
    in_channels : int
        1 for Omniglot, 3 for Mini-ImageNet.
    image_size : int
        Input height and width (28 or 84); fixes the head's input size.
    n_filters : int
        Filters per block (64 Omniglot, 32 Mini-ImageNet).
    stride : int
        Convolution stride (2 Omniglot, 1 Mini-ImageNet).
    pool : bool
        2x2 max pool after each block (Mini-ImageNet).
    features : {"mean", "flatten"}
        Spatial mean over the last block (Omniglot) or flatten (Mini-ImageNet).
    head_init : {"normal", "xavier"}
        Head weights N(0, 1) (Omniglot) or Xavier uniform (Mini-ImageNet); bias 0.

    Examples
    --------
    >>> import torch
    >>> net = Conv4(n_way=20)
    >>> tuple(net(torch.zeros(3, 1, 28, 28)).shape)
    (3, 20)
    >>> [name for name, _ in net.named_children()]
    ['conv1', 'conv2', 'conv3', 'conv4', 'head']
    """

    def __init__(self, n_way: int, in_channels: int = 1, image_size: int = 28,
                 n_filters: int = 64, stride: int = 2, pool: bool = False,
                 features: str = "mean", head_init: str = "normal"):
        super().__init__()
        if features not in FEATURES:
            raise TrainingError(f"Unknown features {features!r}. Expected one of {list(FEATURES)}")
        if head_init not in HEAD_INITS:
            raise TrainingError(f"Unknown head_init {head_init!r}. Expected one of {list(HEAD_INITS)}")
        self.features = features
        channels = [in_channels] + [n_filters] * 4
        size = image_size
        for i in range(4):
            self.add_module(f"conv{i + 1}", ConvBlock(channels[i], channels[i + 1], stride, pool))
            size = math.ceil(size / stride)
            if pool:
                size //= 2
        n_features = n_filters if features == "mean" else n_filters * size * size
        self.head = nn.Linear(n_features, n_way)
        if head_init == "normal":
            nn.init.normal_(self.head.weight, 0.0, 1.0)
        else:
            nn.init.xavier_uniform_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv4(self.conv3(self.conv2(self.conv1(x))))
        x = x.mean(dim=(2, 3)) if self.features == "mean" else x.flatten(1)
        return self.head(x)


def build_model(config: MAMLConfig | dict) -> Conv4:
    """Build the network a run's configuration describes (fresh random weights).

    Parameters
    ----------
    config : MAMLConfig or dict
        A :class:`repscope.training.config.MAMLConfig` or the dict stored in a run's
        ``config.json``. Weights come from the current torch RNG state; seed it
        first, or load meta-parameters with :func:`repscope.training.load_meta_parameters`.

    Returns
    -------
    Conv4

    Examples
    --------
    >>> from repscope.training.config import get_preset
    >>> net = build_model(get_preset("miniimagenet-5way-1shot"))
    >>> net.head.in_features
    800
    """
    if isinstance(config, dict):
        config = MAMLConfig.from_dict(config)
    return Conv4(
        n_way=config.n_way,
        in_channels=config.in_channels,
        image_size=config.image_size,
        n_filters=config.n_filters,
        stride=config.stride,
        pool=config.pool,
        features=config.features,
        head_init=config.head_init,
    )

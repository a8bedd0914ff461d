"""The MAML inner loop: which parameters adapt, the support loss, and ``adapt``.

The inner loop runs through :func:`higher.innerloop_ctx` with
``copy_initial_weights=False`` (so meta-gradients reach the model) and plain SGD over
the adapted parameters only; every other parameter is carried along unchanged.

Loss conventions (``config.inner_loss``, ``config.meta_loss``; :func:`task_loss`, for
one task or many stacked, used by every engine):

``"sum_over_k"``
    cross-entropy summed over the N*K support examples and divided by K, as
    cbfinn/maml's ``xent(...) / update_batch_size``; the paper's alpha applies as is.
``"mean"``
    PyTorch's mean cross-entropy, N times smaller; ``inner_lr = N * alpha`` gives the
    same step (2.0 for 20-way with alpha 0.1).
"""
import higher
import torch
import torch.nn.functional as F

from .config import LOSS_CONVENTIONS
from .errors import TrainingError
from .options import check_choice

__all__ = ["adapted_parameter_names", "task_loss", "adapt"]


def _layer_names(model) -> list:
    return [name for name, _ in model.named_children()]


def _selected_layers(model, spec: str) -> list:
    layers = _layer_names(model)
    convs = [name for name in layers if name.startswith("conv")]
    if spec == "all":
        return layers
    if spec == "head":
        return ["head"]
    if spec.startswith("freeze:"):
        try:
            k = int(spec.split(":", 1)[1])
        except ValueError:
            k = -1
        if not 0 <= k <= len(convs):
            raise TrainingError(f"adapt_layers {spec!r}: K must be an integer in "
                                f"0..{len(convs)} (conv blocks to freeze)")
        return [name for name in layers if name not in convs[:k]]
    chosen = [s.strip() for s in spec.split(",") if s.strip()]
    unknown = [s for s in chosen if s not in layers]
    if unknown or not chosen:
        raise TrainingError(f"Unknown adapt_layers {spec!r}. Expected 'all', 'head', "
                            f"'freeze:K' or a comma-separated subset of {layers}")
    return chosen


def adapted_parameter_names(model, config) -> list:
    """Names of the parameters the inner loop updates, in ``named_parameters`` order.

    Layers come from ``config.adapt_layers``; batch-norm offsets (``*.norm.beta``) are
    left out unless ``config.adapt_bn``.

    Examples
    --------
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> net = build_model(get_preset("quick"))
    >>> adapted_parameter_names(net, get_preset("quick", adapt_layers="freeze:3"))
    ['conv4.conv.weight', 'conv4.conv.bias', 'head.weight', 'head.bias']
    >>> len(adapted_parameter_names(net, get_preset("quick", adapt_bn=True)))
    14
    """
    layers = _selected_layers(model, config.adapt_layers)
    names = []
    for name, _ in model.named_parameters():
        if name.split(".")[0] not in layers:
            continue
        if name.endswith("norm.beta") and not config.adapt_bn:
            continue
        names.append(name)
    return names


def task_loss(logits: torch.Tensor, labels: torch.Tensor, convention: str, k_shot: int,
              option: str = "inner_loss"):
    """Cross-entropy of a task in a loss convention (:data:`~repscope.training.config.LOSS_CONVENTIONS`).

    ``"mean"``: mean over the task's examples; ``"sum_over_k"``: their sum divided by K.

    Parameters
    ----------
    logits : torch.Tensor
        ``(n, classes)`` for one task, or ``(T, n, classes)`` for ``T`` stacked tasks.
    labels : torch.Tensor
        ``(n,)`` or ``(T, n)``.
    convention : str
        One of ``LOSS_CONVENTIONS``.
    k_shot : int
        K, the divisor of ``"sum_over_k"``.
    option : str, default "inner_loss"
        The configuration field ``convention`` came from, named in the error for an
        unknown convention.

    Returns
    -------
    torch.Tensor
        The loss: a scalar for one task, ``(T,)`` (one per task) for stacked tasks.

    Examples
    --------
    >>> import torch
    >>> logits, labels = torch.zeros(4, 2), torch.tensor([0, 1, 0, 1])
    >>> round(task_loss(logits, labels, "sum_over_k", 2).item(), 4)  # 4 * ln 2 / 2
    1.3863
    >>> task_loss(logits.expand(3, 4, 2), labels.expand(3, 4), "mean", 2).shape
    torch.Size([3])
    >>> task_loss(logits, labels, "sum", 2, option="meta_loss")
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: Unknown meta_loss (--meta-loss) 'sum'. Expected one of ['sum_over_k', 'mean']
    """
    check_choice(option, convention, LOSS_CONVENTIONS)
    if logits.dim() == 2:  # one task: PyTorch's reductions
        if convention == "mean":
            return F.cross_entropy(logits, labels)
        return F.cross_entropy(logits, labels, reduction="sum") / k_shot
    ce = F.cross_entropy(logits.flatten(0, 1), labels.flatten(), reduction="none").view(labels.shape)
    if convention == "mean":
        return ce.mean(dim=1)
    return ce.sum(dim=1) / k_shot


def adapt(model, support_x, support_y, config, steps=None, track_higher_grads=False):
    """Adapt ``model`` to one task's support set; yield ``(step, fmodel)`` for 0..steps.

    ``step`` 0 is the unadapted network (the meta-parameters themselves); each later
    ``fmodel`` has taken one more SGD step on the support loss. ``fmodel`` is a
    :mod:`higher` patched copy: call it like the model; forward hooks must be put on
    its submodules (``fmodel.conv2``), not on ``model``'s.

    Parameters
    ----------
    model : torch.nn.Module
        The meta-learned network (not modified).
    support_x, support_y : torch.Tensor
        Support images (N*K, C, H, W) and labels (N*K,) in 0..N-1.
    config : MAMLConfig
        Supplies ``inner_lr``, ``inner_loss``, ``k_shot``, ``adapt_layers``, ``adapt_bn``.
    steps : int, optional
        Number of inner steps (default ``config.inner_steps_eval``).
    track_higher_grads : bool, default False
        Keep the graph through the inner loop (second-order MAML). False gives
        detached fast weights, as needed for evaluation and probing.

    Yields
    ------
    tuple
        ``(step, fmodel)``: the number of inner steps taken (int) and the adapted
        network (a ``higher`` patched copy of ``model``).

    Examples
    --------
    >>> import torch
    >>> from repscope.training.config import get_preset
    >>> from repscope.training.model import build_model
    >>> cfg = get_preset("quick", n_way=5)
    >>> _ = torch.manual_seed(0)
    >>> net, x, y = build_model(cfg), torch.randn(5, 1, 28, 28), torch.arange(5)
    >>> losses = [F.cross_entropy(f(x), y).item() for _, f in adapt(net, x, y, cfg, 3)]
    >>> len(losses), losses[-1] < losses[0]
    (4, True)
    """
    return _inner_loop(model, support_x, support_y, config, steps, track_higher_grads)


def _inner_loop(model, support_x, support_y, config, steps=None, track_higher_grads=False,
                on_support=None):
    """:func:`adapt`, plus ``on_support(step, logits)`` for each support forward pass
    (``step`` = the number of updates already taken, so 0 is the unadapted network)."""
    steps = config.inner_steps_eval if steps is None else int(steps)
    names = set(adapted_parameter_names(model, config))
    params = [p for name, p in model.named_parameters() if name in names]
    inner_opt = torch.optim.SGD(params, lr=config.inner_lr)
    with higher.innerloop_ctx(model, inner_opt, copy_initial_weights=False,
                              track_higher_grads=track_higher_grads) as (fmodel, diffopt):
        yield 0, fmodel
        for step in range(1, steps + 1):
            logits = fmodel(support_x)
            if on_support is not None:
                on_support(step - 1, logits)
            diffopt.step(task_loss(logits, support_y, config.inner_loss, config.k_shot))
            yield step, fmodel

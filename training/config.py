"""Run configuration of MAML training: one dataclass and named presets.

Every field carries its own help text (``field(metadata={"help": ...})``), from which
``python -m repscope.training.maml --help`` is generated, so the command line documents every
option. The resolved configuration is stored with every artefact of a run
(``config.json``, each checkpoint, ``metrics.jsonl`` headers).

Presets (see :data:`PRESETS`):

``omniglot-20way-1shot``
    Finn et al. (2017) as in cbfinn/maml: 1100/100/423 characters from all 50
    alphabets (full archives ``images_background`` + ``images_evaluation``), random
    90-degree class rotations, meta-batch 16, 5 inner steps (10 at evaluation), inner
    lr 0.1 in the original's convention (sum of the support losses divided by K),
    Adam 1e-3, 60000 steps, 1 query per class. Lake's benchmark is off: its characters
    are in this training split.
``miniimagenet-5way-1shot``
    Finn et al. (2017): 32 filters, max pool, meta-batch 4, inner lr 0.01, 5 inner
    steps (10 at evaluation), 15 queries per class, meta-gradients clipped to
    [-10, 10], 60000 steps.
``quick``
    CPU-sized (run time on the benchmark page): 20-way 1-shot on the two small background
    archives (242 characters: 172 train / 35 val / 35 test), so Lake's benchmark
    (evaluation alphabets) stays clean; meta-batch 4, 1 inner step in meta-training
    (5 at evaluation), Adam 3e-3 (of ten CPU-sized variants tried for the same time, the
    one that learned fastest), 750 steps, checkpoints at 0, 1, 2, 5, 10, 20, then every
    50 steps.
``medium``
    The paper's regime at CPU scale (the run time of the whole
    ``python analyses/layer_similarity.py --preset medium`` is in the reproduction guide): 20-way
    1-shot, 5 inner steps in meta-training (10 at evaluation), second order, inner lr
    0.1 (sum over K), on the small background archives split 120 / 22 / 100
    characters, so that the 100 held-out characters give 5 analysis tasks with
    pairwise disjoint characters (independent units for the findings' CIs);
    meta-batch 4, Adam 3e-3, 2400 meta-steps (9600 tasks; the cost per task is in
    the benchmark guide, ``bench/bench_task_cost.py``), a checkpoint every 40 steps
    (1000/60000 of the run, the paper's F2 gap scaled), validation and test tasks
    rotated as cbfinn/maml evaluates them.

``small``
    The run that ``python analyses/layer_similarity.py`` needs to answer F1 and F3 in
    minutes on a CPU: 20-way 1-shot, second order, 2 inner steps in meta-training (5 at
    evaluation), inner lr 0.1 (sum over K), on the small background archives split
    120 / 22 / 100 characters, so that the 100 held-out characters give 5 analysis
    tasks with pairwise disjoint characters (the fewest the findings' CIs accept);
    meta-batch 4, Adam 3e-3, 750 meta-steps, a checkpoint every 75 steps plus
    log-spaced early ones (17 in all). Departures from the paper: 2 inner steps in
    meta-training instead of 5 (F3's claim is about 5) and 5 instead of 10 at
    evaluation, 750 meta-steps instead of 60000 (no plateau, so F2 and the Figure-3
    statement are not testable: they need ``omniglot-5way-cpu``), 120 training
    characters from 8 background alphabets instead of 1100 from all 50, meta-batch 4
    instead of 16, Adam 3e-3 instead of 1e-3, validation and test tasks not rotated.

``small-anil``
    ANIL (Raghu et al., 2020) trained like ``small``: the same data, splits, tasks,
    meta-steps, checkpoints and seed; only the inner loop differs, adapting the head
    alone (``adapt_layers="head"``) while the conv blocks are meta-learned but never
    adapted, so the two runs differ in the adapted layers and nothing else. Departures
    from Raghu et al.: those of ``small`` (20-way 1-shot on 120 training characters of
    the small background archives instead of the full Omniglot split, 750 meta-steps
    instead of 30000-60000, meta-batch 4, Adam 3e-3, 2 inner steps in meta-training and
    5 at evaluation instead of 5 and 10), the inner lr of MAML's whole network (0.1, sum
    over K) for the head, one seed instead of three.

``omniglot-5way-cpu``
    Sized for a held-out accuracy that converges within a CPU run, so that F2 and the
    Figure-3 statement can be tested after the plateau: 5-way 1-shot (the way and shot
    of the paper's Mini-ImageNet run), second order, 5 inner steps in meta-training
    (10 at evaluation), inner lr 0.1 (sum over K), on the small background archives
    split 80 / 22 / 140 characters: few training characters make the held-out accuracy
    level off early, and the 140 held-out characters give 28 analysis tasks with
    pairwise disjoint characters. Meta-batch 4, Adam 3e-3, 6000 meta-steps (24000
    tasks), a checkpoint every 100 steps (the paper's 1000 of 60000, scaled), so that
    F2's own 1000-step gap and its scaled 100-step gap both fit after a plateau in the
    first two thirds of the run; 5 query images per class in validation and test tasks
    (25 per task, so that a few hundred evaluation tasks resolve about one point of
    accuracy), validation and test tasks rotated as cbfinn/maml evaluates them.
    Departures from the paper: 5-way instead of 20-way on Omniglot, so the probe set
    holds 5 images (RDMs of 10 pairs instead of 190); 80 training characters from 8
    background alphabets instead of 1100 from all 50; 6000 meta-steps instead of
    60000 (the Figure-3 statement's 10000-step gap does not fit: only its scaled
    1000-step form is testable); meta-batch 4 instead of 16; Adam 3e-3 instead of 1e-3;
    5 query images per class at evaluation instead of 1. Lake's benchmark is off (it is
    20-way).

``quick``, ``medium``, ``small``, ``small-anil`` and ``omniglot-5way-cpu`` run the ``batched`` engine
(equal to ``higher`` in float64, faster on a CPU); the paper presets keep the reference
``higher``.
"""
import dataclasses
from dataclasses import dataclass, field
from typing import Optional

from .data.omniglot import ARCHIVE_SETS, BACKGROUND_ARCHIVES
from .errors import TrainingError
from .options import THREADS_HELP, check_choice, check_device, check_int, check_positive
from .options import check_threads

__all__ = ["MAMLConfig", "PRESETS", "get_preset", "checkpoint_steps", "LOSS_CONVENTIONS"]

LOSS_CONVENTIONS = ("sum_over_k", "mean")
DATASETS = ("omniglot", "miniimagenet")
SMALL_ARCHIVES = ARCHIVE_SETS["small"]
FULL_ARCHIVES = ARCHIVE_SETS["all"]

# Fields that may differ between a run and its --resume (they do not change results).
RUNTIME_FIELDS = ("device", "progress", "data", "steps", "threads", "engine")
#: Values of ``engine``, the reference first; the registry
#: (:data:`repscope.training.engines.ENGINES`) holds an engine of each name.
ENGINE_NAMES = ("higher", "batched")


#: Fields that take one of a fixed list of values, and the list (the command line's
#: choices too; ``device``: :data:`repscope.training.options.DEVICES`).
CHOICES = {"dataset": DATASETS, "inner_loss": LOSS_CONVENTIONS, "meta_loss": LOSS_CONVENTIONS,
           "features": ("mean", "flatten"), "head_init": ("normal", "xavier"),
           "engine": ENGINE_NAMES}


def _f(default, help, **kw):
    return field(default=default, metadata={"help": help, **kw})


@dataclass
class MAMLConfig:
    """Everything that defines a MAML run. Build one with :func:`get_preset`.

    Examples
    --------
    >>> cfg = get_preset("quick", steps=10)
    >>> cfg.n_way, cfg.steps, cfg.inner_loss
    (20, 10, 'sum_over_k')
    >>> MAMLConfig.from_dict(cfg.to_dict()) == cfg
    True
    """

    preset: str = _f("quick", "Name of the preset these values started from.")
    dataset: str = _f("omniglot", "Data set.")
    archives: tuple = _f(SMALL_ARCHIVES, "Omniglot archives to train on (comma-separated on the "
                         "command line). The default, the two small background archives, is "
                         "quick to train on; the paper's split needs "
                         "images_background,images_evaluation.")
    data: Optional[str] = _f(None, "Data folder holding omniglot/ (and miniimagenet/); none: "
                             "$REPSCOPE_DATA, else the download cache.")
    n_train: Optional[int] = _f(172, "Omniglot characters in the meta-training split.")
    n_val: Optional[int] = _f(35, "Omniglot characters in the validation split.")
    n_test: Optional[int] = _f(35, "Omniglot characters in the test split (none: the rest).")
    rotate: bool = _f(True, "Rotate each class of a task by a random multiple of 90 degrees "
                      "during meta-training (Finn et al.'s augmentation).")
    rotate_eval: bool = _f(False, "Also rotate the classes of validation and test tasks (and the "
                           "recorded eval tasks) by random multiples of 90 degrees, as cbfinn/maml "
                           "evaluates Omniglot; needed to compare with published accuracies. "
                           "Analysis tasks are never rotated.")
    n_way: int = _f(20, "Classes per task (N).")
    k_shot: int = _f(1, "Support examples per class (K).")
    n_query: int = _f(1, "Query examples per class in meta-training.")
    n_query_eval: int = _f(1, "Query examples per class in validation and test tasks.")
    image_size: int = _f(28, "Input height and width.")
    in_channels: int = _f(1, "Input channels.")
    n_filters: int = _f(64, "Filters per conv block.")
    stride: int = _f(2, "Convolution stride.")
    pool: bool = _f(False, "2x2 max pool after each block.")
    features: str = _f("mean", "How the last block becomes the head's input: 'mean' (spatial "
                       "mean) or 'flatten'.")
    head_init: str = _f("normal", "Head weight init: 'normal' (N(0,1)) or 'xavier'.")
    meta_batch: int = _f(16, "Tasks per meta-update.")
    inner_steps: int = _f(5, "Inner-loop SGD steps during meta-training.")
    inner_steps_eval: int = _f(10, "Inner-loop SGD steps at validation and test.")
    inner_lr: float = _f(0.1, "Inner-loop learning rate, in the convention of inner_loss.")
    inner_loss: str = _f("sum_over_k", "Inner-loop loss: 'sum_over_k' (cross-entropy summed over "
                         "the support set divided by K, as cbfinn/maml) or 'mean' (mean "
                         "cross-entropy; then inner_lr N*alpha gives the same step).")
    meta_loss: str = _f("mean", "Query (outer) loss per task: 'mean' or 'sum_over_k'; the "
                        "task losses are averaged over the meta-batch. cbfinn/maml uses "
                        "'sum_over_k', which matters only together with meta_clip.")
    first_order: bool = _f(False, "First-order MAML (no second derivatives).")
    adapt_bn: bool = _f(False, "Also adapt the batch-norm offsets in the inner loop "
                        "(the original meta-learns them but does not adapt them).")
    adapt_layers: str = _f("all", "Layers adapted in the inner loop: 'all', 'head' (ANIL), "
                           "'freeze:K' (first K conv blocks frozen), or a comma-separated "
                           "list of module names such as 'conv4,head'.")
    meta_lr: float = _f(1e-3, "Adam learning rate of the meta-update.")
    meta_clip: Optional[float] = _f(None, "Clip each meta-gradient element to [-c, c] "
                                    "(10 for Mini-ImageNet); none: no clipping.")
    steps: int = _f(60000, "Meta-training steps.")
    seed: int = _f(0, "Seed of the initial weights, the splits and every episode.")
    checkpoint_every: int = _f(1000, "Checkpoint every this many steps (plus step 0, the last "
                               "step and, with checkpoint_log, 1, 2, 5, 10, 20, 50, ... below it).")
    checkpoint_log: bool = _f(True, "Add log-spaced early checkpoints (1, 2, 5, 10, ...).")
    state_every: int = _f(100, "Also save the resumable state (state.pt) every this many steps.")
    val_every: int = _f(1000, "Validate every this many steps (0: never).")
    val_tasks: int = _f(600, "Held-out tasks per validation (mean and 95% CI).")
    test_tasks: int = _f(600, "Held-out test tasks evaluated after training (0: skip).")
    lake_eval: bool = _f(False, "Evaluate on Lake et al.'s 20-run one-shot benchmark after "
                         "training (only allowed when training on background alphabets).")
    device: str = _f("cpu", "Device.")
    engine: str = _f("higher", "Inner-loop engine: 'higher' (the "
                     "reference; tasks one after another through the higher library) or "
                     "'batched' (all tasks of a meta-batch at once, faster; see the benchmarks "
                     "page). "
                     "They agree to 1e-10 in float64; in float32 rounding differs and the inner "
                     "steps amplify it (the reproduction guide gives the size). May change on "
                     "--resume (the results then differ by that, not bit for bit).")
    progress: bool = _f(True, "Show a tqdm progress bar.")
    threads: int = _f(1, THREADS_HELP + " Keep it unchanged across --resume for bit-exact "
                      "results.")

    def __post_init__(self):
        if isinstance(self.archives, str):
            self.archives = tuple(a for a in self.archives.split(",") if a)
        self.archives = tuple(self.archives)
        self.validate()

    def validate(self) -> None:
        """Check option values; raise :class:`TrainingError` naming the bad one."""
        for name, allowed in CHOICES.items():
            check_choice(name, getattr(self, name), allowed)
        check_device(self.device, available=False)  # a stored run may come from a GPU
        for name in ("n_way", "k_shot", "n_query", "n_query_eval", "meta_batch",
                     "checkpoint_every", "state_every", "image_size", "in_channels",
                     "n_filters", "stride"):
            check_int(name, getattr(self, name), 1)
        for name in ("inner_steps", "inner_steps_eval", "steps", "val_every", "val_tasks",
                     "test_tasks", "seed"):
            check_int(name, getattr(self, name), 0)
        for name in ("inner_lr", "meta_lr"):
            check_positive(name, getattr(self, name))
        if self.meta_clip is not None:
            check_positive("meta_clip", self.meta_clip)
        self.threads = check_threads(self.threads)  # None in older config.json files: 0
        fixed = {"omniglot": {"image_size": 28, "in_channels": 1},
                 "miniimagenet": {"in_channels": 3}}[self.dataset]
        for name, value in fixed.items():
            if getattr(self, name) != value:
                raise TrainingError(
                    f"{name} (--{name.replace('_', '-')}) must be {value} for dataset "
                    f"{self.dataset!r} (its images are loaded so), got {getattr(self, name)!r}")
        size = self.image_size
        for _ in range(4):
            size = -(-size // self.stride) // (2 if self.pool else 1)
        if size < 1:
            raise TrainingError(f"image_size (--image-size) {self.image_size} is too small for "
                                f"four conv blocks with stride {self.stride} and pool "
                                f"{self.pool}: nothing is left of the image after them")
        if self.lake_eval:
            foreign = [a for a in self.archives if a not in BACKGROUND_ARCHIVES]
            if self.dataset != "omniglot" or foreign:
                raise TrainingError(
                    f"lake_eval needs training on Omniglot background alphabets only "
                    f"({list(BACKGROUND_ARCHIVES)}); got dataset {self.dataset!r}, archives "
                    f"{list(self.archives)}. Lake's 20 runs are drawn from the evaluation "
                    "alphabets, which would leak into training.")

    def to_dict(self) -> dict:
        """JSON-ready dict (tuples become lists)."""
        d = dataclasses.asdict(self)
        d["archives"] = list(self.archives)
        return d

    @classmethod
    def from_dict(cls, d: dict) -> "MAMLConfig":
        """Inverse of :meth:`to_dict`; unknown keys raise :class:`TrainingError`."""
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(d) - known)
        if unknown:
            raise TrainingError(f"Unknown config keys {unknown}. Expected keys among "
                                f"{sorted(known)}")
        return cls(**d)


PRESETS = {
    "omniglot-20way-1shot": dict(
        archives=FULL_ARCHIVES, n_train=1100, n_val=100, n_test=423, rotate=True,
        n_way=20, k_shot=1, n_query=1, n_query_eval=1, meta_batch=16, inner_steps=5,
        inner_steps_eval=10, inner_lr=0.1, inner_loss="sum_over_k", meta_lr=1e-3,
        steps=60000, checkpoint_every=1000, val_every=1000, val_tasks=600, test_tasks=600,
        lake_eval=False, rotate_eval=True),
    "miniimagenet-5way-1shot": dict(
        dataset="miniimagenet", archives=(), n_train=None, n_val=None, n_test=None,
        rotate=False, n_way=5, k_shot=1, n_query=15, n_query_eval=1, image_size=84,
        in_channels=3, n_filters=32, stride=1, pool=True, features="flatten",
        head_init="xavier", meta_batch=4, inner_steps=5, inner_steps_eval=10, inner_lr=0.01,
        inner_loss="sum_over_k", meta_loss="sum_over_k", meta_clip=10.0, meta_lr=1e-3,
        steps=60000, checkpoint_every=1000, val_every=1000, val_tasks=600, test_tasks=600),
    "quick": dict(
        archives=SMALL_ARCHIVES, n_train=172, n_val=35, n_test=35, rotate=True,
        n_way=20, k_shot=1, n_query=1, n_query_eval=1, meta_batch=4, inner_steps=1,
        inner_steps_eval=5, inner_lr=0.1, inner_loss="sum_over_k", meta_lr=3e-3,
        steps=750, checkpoint_every=50, val_every=250, val_tasks=100, test_tasks=600,
        lake_eval=True, engine="batched"),
    "medium": dict(
        archives=SMALL_ARCHIVES, n_train=120, n_val=22, n_test=100, rotate=True, rotate_eval=True,
        n_way=20, k_shot=1, n_query=1, n_query_eval=1, meta_batch=4, inner_steps=5,
        inner_steps_eval=10, inner_lr=0.1, inner_loss="sum_over_k", first_order=False,
        meta_lr=3e-3, steps=2400, checkpoint_every=40, val_every=200, val_tasks=100,
        test_tasks=600, lake_eval=True, engine="batched"),
    "small": dict(
        archives=SMALL_ARCHIVES, n_train=120, n_val=22, n_test=100, rotate=True,
        n_way=20, k_shot=1, n_query=1, n_query_eval=1, meta_batch=4, inner_steps=2,
        inner_steps_eval=5, inner_lr=0.1, inner_loss="sum_over_k", first_order=False,
        meta_lr=3e-3, steps=750, checkpoint_every=75, val_every=250, val_tasks=100,
        test_tasks=600, lake_eval=True, engine="batched"),
    "omniglot-5way-cpu": dict(
        archives=SMALL_ARCHIVES, n_train=80, n_val=22, n_test=140, rotate=True, rotate_eval=True,
        n_way=5, k_shot=1, n_query=1, n_query_eval=5, meta_batch=4, inner_steps=5,
        inner_steps_eval=10, inner_lr=0.1, inner_loss="sum_over_k", first_order=False,
        meta_lr=3e-3, steps=6000, checkpoint_every=100, val_every=1000, val_tasks=100,
        test_tasks=600, lake_eval=False, engine="batched"),
}
#: ANIL twin of ``small``: identical but for the adapted layers (see the module docstring).
PRESETS["small-anil"] = dict(PRESETS["small"], adapt_layers="head")


def get_preset(name: str, **overrides) -> MAMLConfig:
    """The configuration of preset ``name`` with ``overrides`` applied.

    Examples
    --------
    >>> get_preset("omniglot-20way-1shot").meta_batch
    16
    >>> get_preset("nope")
    Traceback (most recent call last):
    ...
    repscope.training.errors.TrainingError: Unknown preset 'nope'. Expected one of [...]
    """
    if name not in PRESETS:
        raise TrainingError(f"Unknown preset {name!r}. Expected one of {sorted(PRESETS)}")
    known = {f.name for f in dataclasses.fields(MAMLConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise TrainingError(f"Unknown config fields {unknown}. Expected among {sorted(known)}")
    return MAMLConfig(**{**PRESETS[name], **overrides, "preset": name})


def checkpoint_steps(config: MAMLConfig) -> list:
    """Steps at which meta-parameters are checkpointed: 0, early log-spaced, every N, last.

    Examples
    --------
    >>> checkpoint_steps(get_preset("quick", steps=450, checkpoint_every=100))
    [0, 1, 2, 5, 10, 20, 50, 100, 200, 300, 400, 450]
    """
    steps = {0, config.steps}
    steps.update(range(0, config.steps + 1, config.checkpoint_every))
    if config.checkpoint_log:
        base = 1
        while base < config.checkpoint_every:
            steps.update(s for s in (base, 2 * base, 5 * base)
                         if s < config.checkpoint_every and s <= config.steps)
            base *= 10
    return sorted(steps)

"""What determines a run's result, as frozen dataclasses that serialize to JSON in the run file.

`RunConfig` holds everything that determines the numbers (data, model, objective, optimizer, seed,
what is saved); how it runs (device, paths, progress) is `execution.Execution`. Defaults that
depend on the data set (the paper's settings, docs/settings.md) live in one place:
`PAPER_DEFAULTS`, applied by `RunConfig.resolved()`, so a stored config is always explicit.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass, field
from typing import Any, Literal, get_args

from landscape.config.objective import (  # noqa: F401  (names of the first release, here)
    ADAFLOOD_DEFAULTS,
    ADAPTIVE_DEFAULTS,
    LOSSES,
    OBJECTIVES,
    SCHEDULES,
    Loss,
    ObjectiveConfig,
    ObjectiveKind,
    Schedule,
)
from landscape.config.saving import (  # noqa: F401
    SAVE_POLICIES,
    check_save_policy,
    save_epochs,
)
from landscape.config.tracking import TrackConfig
from landscape.errors import require, require_choice

# How a run executes and the flood-level grammar were defined here in the first release.

# The choices, as types (for checkers and editors) and as the tuples that validation names.
DataName = Literal["two_gaussians", "sinusoid", "spiral", "mnist", "kmnist", "svhn", "cifar10",
                   "cifar100"]
ModelName = Literal["mlp", "mlp_bn", "resnet18", "resnet44"]
Optimizer = Literal["adam", "sgd"]
DATASETS: tuple[str, ...] = get_args(DataName)
SYNTHETIC, IMAGES = DATASETS[:3], DATASETS[3:]
MODELS: tuple[str, ...] = get_args(ModelName)
OPTIMIZERS: tuple[str, ...] = get_args(Optimizer)
NUM_CLASSES = {"two_gaussians": 2, "sinusoid": 2, "spiral": 2, "mnist": 10, "kmnist": 10,
               "svhn": 10, "cifar10": 10, "cifar100": 100}

# The paper's settings (Sec. 4.1, 4.2; docs/settings.md), by data family: the one copy, applied by
# RunConfig.resolved() to every field left None. The image sets' batch size of 128 is ours: the
# paper does not give one.
PAPER_DEFAULTS: dict[str, dict[str, Any]] = {
    "synthetic": dict(model="mlp", optimizer="adam", lr=1e-3, momentum=0.0, batch_size=100,
                      epochs=500),
    "mnist": dict(model="mlp", optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128, epochs=500),
    "svhn": dict(model="resnet18", optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128,
                 epochs=500),
    "cifar": dict(model="resnet44", optimizer="sgd", lr=0.1, momentum=0.9, batch_size=128,
                  epochs=500),
}
# An optimizer asked for outside its family's recipe takes the learning rate of the recipe that
# uses it (Adam 1e-3, SGD 0.1), and SGD the family's momentum (0 for the synthetic sets).
OPTIMIZER_LR = {d["optimizer"]: d["lr"] for d in PAPER_DEFAULTS.values()}
# MLP shapes: the paper's 5 x 500 for the synthetic sets, the demo code's 4 x 500 Linear-BN-ReLU as
# `mlp_bn`; 2 x 1000 for MNIST/KMNIST (with or without BN).
MLP_SHAPES = {("synthetic", "mlp"): (5, 500), ("synthetic", "mlp_bn"): (4, 500),
              ("mnist", "mlp"): (2, 1000), ("mnist", "mlp_bn"): (2, 1000)}
# Sample sizes (train, val, test) in total. "paper": as the paper's text states them (Two Gaussians
# and Sinusoid 100/100/20000 in total; Spiral 100/100/10000 per class). "demo": per class, as the
# authors' demo code draws them (100/100/10000 per class).
SYNTHETIC_SIZES = {
    "paper": {"two_gaussians": (100, 100, 20000), "sinusoid": (100, 100, 20000),
              "spiral": (200, 200, 20000)},
    "demo": {name: (200, 200, 20000) for name in SYNTHETIC},
}


def family(data_name: str) -> str:
    if data_name in SYNTHETIC:
        return "synthetic"
    if data_name in ("mnist", "kmnist"):
        return "mnist"
    if data_name == "svhn":
        return "svhn"
    return "cifar"


@dataclass(frozen=True)
class DataConfig:
    """The data set, its label noise and the seed of its draw, label flips and split."""

    name: DataName
    noise: float = 0.0          # fraction of labels flipped, in train, validation and test alike
    seed: int = 0
    sizes: Literal["paper", "demo"] = "paper"
    n_train: int | None = None  # totals; None: SYNTHETIC_SIZES[sizes] / the data set's own split
    n_val: int | None = None
    n_test: int | None = None
    gaussian_dim: int | None = None       # Two Gaussians: dimension and the second mean m * 1
    gaussian_mean: float | None = None
    sinusoid_input: Literal["gaussian", "disk"] | None = None  # paper: N(0, I2); demo: disk r=2
    spiral_tau: float | None = None       # Spiral input noise
    val_fraction: float | None = None     # image sets: share of the training set held out

    def __post_init__(self) -> None:
        require_choice(self.name, DATASETS, "data set")
        require(0.0 <= self.noise < 0.5 or (self.name not in SYNTHETIC and 0 <= self.noise < 1),
                f"--noise must be in [0, 0.5) for binary data, got {self.noise}")
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        require_choice(self.sizes, ("paper", "demo"), "size convention")
        for key in ("n_train", "n_val", "n_test"):
            value = getattr(self, key)
            require(value is None or value >= 2,
                    f"--{key.replace('_', '-')} must be at least 2, got {value}")
        if self.sinusoid_input is not None:
            require_choice(self.sinusoid_input, ("gaussian", "disk"), "sinusoid input distribution")
        require(self.spiral_tau is None
                or (math.isfinite(self.spiral_tau) and self.spiral_tau >= 0),
                f"--spiral-tau must be a finite number >= 0, got {self.spiral_tau}")
        require(self.gaussian_mean is None or math.isfinite(self.gaussian_mean),
                f"gaussian mean must be finite, got {self.gaussian_mean}")
        require(self.gaussian_dim is None or self.gaussian_dim >= 1, "gaussian dim must be >= 1")
        require(self.val_fraction is None or 0 < self.val_fraction < 1,
                f"--val-fraction must be in (0, 1), got {self.val_fraction}")

    @property
    def num_classes(self) -> int:
        return NUM_CLASSES[self.name]

    def resolved(self, *, augment: bool = False) -> DataConfig:
        changes: dict[str, Any] = {}
        if self.name in SYNTHETIC:
            defaults = SYNTHETIC_SIZES[self.sizes][self.name]
            for key, default in zip(("n_train", "n_val", "n_test"), defaults):
                if getattr(self, key) is None:
                    changes[key] = default
            if self.name == "two_gaussians":
                changes.update(gaussian_dim=self.gaussian_dim or 10,
                               gaussian_mean=1.0 if self.gaussian_mean is None else self.gaussian_mean)
            if self.name == "sinusoid" and self.sinusoid_input is None:
                changes["sinusoid_input"] = "gaussian" if self.sizes == "paper" else "disk"
            if self.name == "spiral" and self.spiral_tau is None:
                # The paper gives no tau. Table 2's low-noise Spiral accuracy (98.7%) needs nearly
                # separable classes: with tau = 1 the Bayes accuracy is only about 94%.
                changes["spiral_tau"] = 0.0
        elif self.val_fraction is None:
            changes["val_fraction"] = 0.15 if augment else 0.2  # paper: 80:20, 85:15 with augment
        return dataclasses.replace(self, **changes)


@dataclass(frozen=True)
class ModelConfig:
    name: ModelName | None = None  # None: the paper's model for the data set (PAPER_DEFAULTS)
    depth: int | None = None   # MLP hidden layers
    width: int | None = None   # MLP hidden units

    def __post_init__(self) -> None:
        if self.name is not None:
            require_choice(self.name, MODELS, "model")
        require(self.depth is None or self.depth >= 0, f"--depth must be >= 0, got {self.depth}")
        require(self.width is None or self.width >= 1, f"--width must be >= 1, got {self.width}")

    def resolved(self, data_name: str) -> ModelConfig:
        name = self.name or PAPER_DEFAULTS[family(data_name)]["model"]
        if not name.startswith("mlp"):
            return dataclasses.replace(self, name=name, depth=None, width=None)
        depth, width = MLP_SHAPES.get((family(data_name), name), (2, 1000))
        return dataclasses.replace(self, name=name, depth=depth if self.depth is None else self.depth,
                                   width=width if self.width is None else self.width)


@dataclass(frozen=True)
class OptimConfig:
    """The optimizer and its schedule. Fields left None are the paper's for the data set
    (PAPER_DEFAULTS), filled in by RunConfig.resolved(): a stored config has none."""

    name: Optimizer | None = None
    lr: float | None = None
    momentum: float | None = None
    weight_decay: float = 0.0
    milestones: tuple[int, ...] = ()  # epochs after which the learning rate is multiplied by gamma
    gamma: float = 0.1
    batch_size: int | None = None
    epochs: int | None = None

    def __post_init__(self) -> None:
        if self.name is not None:
            require_choice(self.name, OPTIMIZERS, "optimizer")
        require(self.lr is None or (self.lr > 0 and math.isfinite(self.lr)),
                f"--lr must be > 0, got {self.lr}")
        require(self.momentum is None or 0 <= self.momentum < 1,
                f"--momentum must be in [0, 1), got {self.momentum}")
        require(math.isfinite(self.weight_decay) and self.weight_decay >= 0,
                f"--weight-decay must be a finite number >= 0, got {self.weight_decay}")
        require(math.isfinite(self.gamma) and self.gamma > 0,
                f"lr gamma must be > 0, got {self.gamma}")
        require(self.batch_size is None or self.batch_size >= 1,
                f"--batch-size must be >= 1, got {self.batch_size}")
        require(self.epochs is None or self.epochs >= 1,
                f"--epochs must be >= 1, got {self.epochs}")
        require(all(m >= 1 for m in self.milestones)
                and list(self.milestones) == sorted(self.milestones),
                f"--lr-milestones must be increasing positive epochs, got {self.milestones}")

    def resolved(self, data_name: str) -> OptimConfig:
        """Every field left None filled from the paper's recipe for the data set."""
        recipe = PAPER_DEFAULTS[family(data_name)]
        name = self.name or recipe["optimizer"]
        own = name == recipe["optimizer"]
        default_lr = recipe["lr"] if own else OPTIMIZER_LR[name]
        default_momentum = recipe["momentum"] if name == "sgd" else 0.0
        return dataclasses.replace(
            self, name=name, lr=default_lr if self.lr is None else self.lr,
            momentum=default_momentum if self.momentum is None else self.momentum,
            batch_size=recipe["batch_size"] if self.batch_size is None else self.batch_size,
            epochs=recipe["epochs"] if self.epochs is None else self.epochs)

    def lr_at(self, epoch: int) -> float:
        """Learning rate used while training epoch `epoch` (1-based): multi-step decay."""
        assert self.lr is not None, "an unresolved OptimConfig (RunConfig.resolved() fills lr)"
        return self.lr * self.gamma ** sum(1 for m in self.milestones if epoch > m)


# (save policy, test policy) where a RunConfig leaves them None: a sweep's members keep only the
# last epoch's parameters and measure the test set where validation accuracy reaches a new best
# (at saved and final epochs too: what tables need); a single run keeps every 10th epoch and
# measures the test set every epoch (what learning curves need).
RUN_DEFAULTS = {"single": ("every:10", "every"), "sweep": ("last", "best")}


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers. Serialized into the run file's root attributes."""

    data: DataConfig
    model: ModelConfig = field(default_factory=ModelConfig)
    objective: ObjectiveConfig = field(default_factory=ObjectiveConfig)
    optim: OptimConfig = field(default_factory=OptimConfig)
    seed: int = 0                  # initialization and batch order
    augment: bool = False          # random crop (pad 4) + horizontal flip, image sets only
    # None: resolved() chooses by the number of runs (RUN_DEFAULTS): a sweep keeps the last
    # epoch's parameters and tests where validation improves, a single run more.
    save: str | None = None        # see save_epochs()
    eval_test: Literal["every", "best"] | None = None
    dtype: Literal["float32", "float64"] = "float32"
    track: TrackConfig | None = None  # measures recorded while training; None: none (tracking.py)

    def __post_init__(self) -> None:
        require(self.seed >= 0, f"seed must be >= 0, got {self.seed}")
        samples, n_train = self.track and self.track.samples, self.data.n_train
        require(samples is None or n_train is None or samples <= n_train,
                f"--track-samples must be at most the {n_train} training rows, got {samples}")
        if self.eval_test is not None:
            require_choice(self.eval_test, ("every", "best"), "test evaluation policy")
        require_choice(self.dtype, ("float32", "float64"), "dtype")
        if self.save is not None:
            check_save_policy(self.save, self.epochs)
        require(not (self.augment and self.data.name in SYNTHETIC),
                "--augment applies to image data sets only")
        loss = self.objective.loss
        require(loss != "logistic" or self.data.num_classes == 2,
                f"the logistic loss needs a binary data set; {self.data.name} has "
                f"{self.data.num_classes} classes")
        require(not (self.model.name or "").startswith("resnet") or self.data.name in IMAGES,
                f"{self.model.name} needs an image data set, not {self.data.name}")
        folds, n_train = self.objective.adaflood_folds, self.data.n_train
        require(folds is None or n_train is None or folds <= n_train,
                f"--adaflood-folds {folds} is more than the {n_train} training points (each fold "
                "holds out at least one)")

    def resolved(self, *, sweep: bool = False) -> RunConfig:
        """The same config with every default made explicit: the paper's model, optimizer,
        learning rate, momentum, batch size and epochs (PAPER_DEFAULTS, docs/settings.md) where
        they were left None, the data set's sizes, the loss, and the save and test policies of
        a single run or of a member of a sweep (RUN_DEFAULTS)."""
        loss = self.objective.loss or ("logistic" if self.data.num_classes == 2 else "ce")
        save, eval_test = RUN_DEFAULTS["sweep" if sweep else "single"]
        data = self.data.resolved(augment=self.augment)
        return dataclasses.replace(
            self, save=self.save or save, eval_test=self.eval_test or eval_test,
            data=data, track=self.track and self.track.resolved(data.n_train),
            model=self.model.resolved(self.data.name),
            objective=self.objective.resolved(loss),
            optim=self.optim.resolved(self.data.name),
        )

    @property
    def epochs(self) -> int:
        """The number of epochs, the paper's (PAPER_DEFAULTS) when not given."""
        return self.optim.resolved(self.data.name).epochs  # type: ignore[return-value]

    @property
    def save_epochs(self) -> tuple[int, ...]:
        """The epochs whose parameters the run keeps: the save policy resolved."""
        assert self.save is not None, "an unresolved RunConfig (resolved() fills the save policy)"
        return save_epochs(self.save, self.epochs)

    @property
    def name(self) -> str:
        """A readable run name: data, noise, model, objective and flood level, seed."""
        parts = [self.data.name]
        if self.data.noise:
            parts.append(f"noise{self.data.noise:g}")
        parts += [self.model.resolved(self.data.name).name, self.objective.label, f"seed{self.seed}"]
        return "-".join(parts)

    def to_json(self) -> str:
        raw = dataclasses.asdict(self)
        # Objective options added after format 1 are left out while unused, so that every config
        # written before them keeps its JSON and its digest (result files compare digests).
        raw["objective"] = {k: v for k, v in raw["objective"].items()
                            if v is not None or k not in LATER_OBJECTIVE_FIELDS}
        if raw["track"] is None:  # likewise: an untracked run keeps its JSON and digest
            del raw["track"]
        return json.dumps(raw, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> RunConfig:
        raw = json.loads(text)
        return cls(
            data=DataConfig(**raw["data"]),
            model=ModelConfig(**raw["model"]),
            objective=ObjectiveConfig(**raw["objective"]),
            optim=OptimConfig(**{**raw["optim"], "milestones": tuple(raw["optim"]["milestones"])}),
            track=TrackConfig(**raw["track"]) if raw.get("track") is not None else None,
            **{k: v for k, v in raw.items()
               if k not in ("data", "model", "objective", "optim", "track")},
        )

    def fields(self) -> dict[str, Any]:
        """Flat field names to values, e.g. "data.noise" -> 0.1 (for diffs and labels)."""
        def flat(d: dict, prefix: str = "") -> dict[str, Any]:
            out: dict[str, Any] = {}
            for k, v in d.items():
                out.update(flat(v, f"{prefix}{k}.") if isinstance(v, dict) else {prefix + k: v})
            return out
        return flat(json.loads(self.to_json()))

    def digest(self) -> str:
        return hashlib.sha256(self.to_json().encode()).hexdigest()[:12]


LATER_OBJECTIVE_FIELDS = ("schedule", "schedule_step", "schedule_threshold", "schedule_max",
                          "adaflood_gamma", "adaflood_folds")

"""The typed training configuration: a :class:`Recipe` of sections read from YAML, checked when built.

Built-in recipes are YAML files in ``clip2depth/training/recipes`` (``nyu``, ``kitti``, ``synthetic``,
``folder``); a user's YAML file has the same layout. Every field has a default, so a file names only
what it changes. The sections are :class:`~clip2depth.typed.TypedConfig` dataclasses: a key they do not
know, a key given twice, or a value of the wrong type, out of range or inconsistent with another is
refused with the file, the key, the value and what is expected. The recipe resolves its model once
(:attr:`Recipe.model_spec`): all of it happens before any model is built or any CLIP weight fetched.

``--set section.key=value`` is converted to the field's type. ``model_overrides`` holds
:class:`~clip2depth.models.config.ModelConfig` fields (checked as such); ``data.kwargs`` /
``data.val_kwargs`` stay open: their keys are options of the dataset class (checked by
:func:`clip2depth.data.build_dataset`).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

from clip2depth.data import DATASETS
from clip2depth.errors import ConfigError
from clip2depth.evaluation.metrics import CROPS
from clip2depth.evaluation.protocol import EvalSettings
from clip2depth.models.config import ModelConfig
from clip2depth.models.spec import ModelSpec, resolve_model
from clip2depth.typed import FieldError, TypedConfig, field_type, invalid, load_yaml, parse_text, setting

logger = logging.getLogger(__name__)

AmpMode = Literal["auto", "fp32", "bf16", "fp16"]


@dataclass
class DataSection(TypedConfig):
    """Which dataset trains and validates the model."""

    dataset: str = setting("synthetic", choices=DATASETS)
    """Dataset name: ``nyu``, ``nyu-mat``, ``kitti``, ``folder`` (your own files) or ``synthetic``."""
    root: str | None = None
    """Dataset root (``--data-root``); NYU and KITTI fall back to their environment variables."""
    train_split: str = "train"
    """Split trained on (for ``folder`` without ``train_list``: ``<root>/<train_split>.txt``)."""
    val_split: str = "test"
    """Split validated on (for ``folder`` without ``val_list``: ``<root>/<val_split>.txt``)."""
    train_list: str | None = None
    """``folder`` only: list file of ``rgb depth [focal]`` lines to train on."""
    val_list: str | None = None
    """``folder`` only: list file to validate on; when set, ``val_fraction`` is not used."""
    val_fraction: float = setting(0.0, ge=0, lt=1)
    """``folder`` only, without ``val_list``: fraction of the train list held out for validation (chosen
    by ``train.seed``); 0 validates on ``<root>/<val_split>.txt``."""
    depth_scale: float = setting(1000.0, gt=0)
    """``folder`` only: integer depth images hold metres × this (1000 = millimetres, 256 = KITTI style)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """More options of the training dataset class (e.g. ``size`` for ``synthetic``)."""
    val_kwargs: dict[str, Any] = field(default_factory=dict)
    """More options of the validation dataset class."""

    def validate(self) -> None:
        for key in ("train_list", "val_list", "val_fraction"):
            value = getattr(self, key)
            if value and self.dataset != "folder":
                raise invalid(key, value, f"{'0' if key == 'val_fraction' else 'null'}: only dataset=folder reads it "
                              f"(this recipe's dataset is {self.dataset!r})")


@dataclass
class AugmentSection(TypedConfig):
    """Training augmentation (docs/method.md#training-recipe)."""

    crop_size: tuple[int, int] = setting((416, 544), ge=1)
    """Random crop (height, width) in pixels."""
    rotate_deg: float = setting(2.5, ge=0)
    """Largest random rotation, degrees."""
    flip_p: float = setting(0.5, ge=0, le=1)
    """Probability of a horizontal flip."""
    gamma: tuple[float, float] = setting((0.9, 1.1), gt=0)
    """Random gamma range [low, high]."""
    brightness: tuple[float, float] = setting((0.75, 1.25), gt=0)
    """Random brightness factor range [low, high]."""
    color: tuple[float, float] = setting((0.9, 1.1), gt=0)
    """Random per-channel colour factor range [low, high]."""
    kb_crop: bool = False
    """Apply the KITTI KB crop (352×1216) before the random crop."""

    def validate(self) -> None:
        for key in ("gamma", "brightness", "color"):
            low, high = getattr(self, key)
            if low > high:
                raise invalid(key, [low, high], "an ordered range [low, high] with low <= high")


@dataclass
class EvalSection(TypedConfig):
    """How validation (and the demo's test) measures the model (docs/method.md#evaluation-protocol)."""

    crop: str | None = setting(None, choices=CROPS)
    """Evaluation crop name (``nyu_eigen``, ``kitti_garg``, ...) or None for the whole image."""
    min_depth: float = setting(1e-3, gt=0)
    """Ground truth counts where ``min_depth < depth < max_depth`` (metres)."""
    max_depth: float = setting(10.0, gt=0)
    """Upper end of the valid ground truth (metres); predictions are clamped to it."""
    flip_tta: bool = False
    """Average the prediction with that of the flipped image."""
    limit: int | None = setting(None, ge=1)
    """Validate on the first N images only; None for all."""

    def validate(self) -> None:
        if self.min_depth >= self.max_depth:
            raise invalid("min_depth", self.min_depth, f"a number < max_depth ({self.max_depth:g})")

    def settings(self) -> EvalSettings:
        """The evaluation protocol these fields describe."""
        return EvalSettings(min_depth=self.min_depth, max_depth=self.max_depth, crop=self.crop,
                            flip_tta=self.flip_tta)


@dataclass
class TrainSection(TypedConfig):
    """Optimisation, schedule, loss and run-keeping."""

    epochs: int = setting(25, ge=1)
    """Passes over the training set; ignored when ``max_steps`` is set."""
    max_steps: int | None = setting(None, ge=1)
    """Total optimizer steps; None: ``epochs`` × batches per epoch."""
    batch_size: int = setting(8, ge=1)
    """Global batch (split over ranks and accumulation micro-batches)."""
    accumulation: int = setting(1, ge=1)
    """Micro-batches accumulated per optimizer step."""
    lr: float = setting(3e-4, gt=0)
    """Peak learning rate of the one-cycle schedule."""
    weight_decay: float = setting(0.01, ge=0)
    """AdamW weight decay of matrices (biases and norms get none)."""
    pct_start: float = setting(0.3, ge=0, le=1)
    """Fraction of the steps spent warming up."""
    div_factor: float = setting(25.0, gt=0)
    """Starting learning rate = ``lr / div_factor``."""
    final_div_factor: float = setting(100.0, gt=0)
    """Final learning rate = starting rate / ``final_div_factor``."""
    grad_clip: float = setting(1.0, ge=0)
    """Largest gradient norm; 0 turns clipping off."""
    loss_min_depth: float = setting(1e-3, gt=0)
    """Ground truth below this (metres) is left out of the loss."""
    variance_focus: float = setting(0.85, ge=0, le=1)
    """SILog's lambda."""
    loss_scale: float = setting(10.0, gt=0)
    """SILog's outer factor."""
    loss_per_image: bool = False
    """SILog per image, averaged (exactly additive over DDP ranks), instead of over the whole batch."""
    amp: AmpMode = "auto"
    """Mixed precision on CUDA: ``auto`` (bf16 where supported, else fp16), ``bf16``, ``fp16`` or ``fp32``."""
    compile: bool = False
    """Run the model through ``torch.compile``."""
    num_workers: int = setting(4, ge=0)
    """Data-loading worker processes."""
    seed: int = 42
    """Seed of the model's initialisation, the data order and the augmentation."""
    log_every: int = setting(50, ge=1)
    """Write a training-loss record every N steps."""
    val_every: int = setting(2000, ge=1)
    """Validate and checkpoint every N steps (and at the end)."""
    max_nonfinite: int = setting(20, ge=0)
    """Stop after this many non-finite losses in a row."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the ``tensorboard`` package)."""
    time_limit_s: float | None = setting(None, gt=0)
    """Stop (with a checkpoint, resumable) after this many seconds; None for no limit."""

    def validate(self) -> None:
        if self.batch_size % self.accumulation:
            raise invalid("batch_size", self.batch_size, f"a multiple of accumulation ({self.accumulation})")


SECTIONS: dict[str, type[TypedConfig]] = {"data": DataSection, "augment": AugmentSection, "eval": EvalSection,
                                          "train": TrainSection}
"""Recipe section name → its dataclass."""


@dataclass
class Recipe(TypedConfig):
    """Everything one training run needs; ``config.yaml`` in the run folder is this, resolved."""

    model: str = "tiny"
    """Preset name, model directory or ``hf-hub:ORG/NAME`` to start from."""
    pretrained: str | None = None
    """CLIP weights: an open_clip tag, ``hf-hub:...`` or a local file; None for random CLIP weights (a
    model directory: the weights its config.json records)."""
    model_overrides: dict[str, Any] = setting(factory=dict, keys_of=ModelConfig)
    """ModelConfig fields changed from the preset or directory (e.g. ``mirror_length``)."""
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    eval: EvalSection = field(default_factory=EvalSection)
    train: TrainSection = field(default_factory=TrainSection)

    def validate(self) -> None:
        overrides = {"train_size": list(self.train_size()), **self.model_overrides}
        try:
            self._model_spec = resolve_model(self.model, pretrained=self.pretrained, overrides=overrides,
                                             download=False)
        except FieldError as exc:  # overrides that each fit but not together, or not with the model
            raise exc.within("model_overrides") from None

    def train_size(self) -> tuple[int, int]:
        """The scale the trained model records (``ModelConfig.train_size``, the size ``predict`` works at): the
        size of the validation images when the dataset fixes it (480×640 for NYU, the 352×1216 KB crop for
        KITTI, the rendered size for synthetic scenes), else the training crop. ``model_overrides.train_size``
        takes precedence."""
        size = DATASETS[self.data.dataset].input_size(self.data.val_kwargs)
        return size if size is not None else self.augment.crop_size

    @property
    def model_spec(self) -> ModelSpec:
        """The model this recipe trains, resolved once when the recipe was built (an ``hf-hub:`` model is
        downloaded when training starts)."""
        return self._model_spec

    def replace(self, **changes: Any) -> Recipe:
        """A checked copy with top-level fields or whole sections replaced; when the model's CLIP changes and
        ``pretrained`` is not among ``changes``, the CLIP weights follow (see :func:`apply_overrides`)."""
        updated = super().replace(**changes)
        return updated if "pretrained" in changes else _weights_follow_clip(self, updated)


def _weights_follow_clip(before: Recipe, after: Recipe) -> Recipe:
    """``after`` with CLIP weights that belong to its CLIP.

    A recipe's ``pretrained`` names weights of its model's CLIP. When the model now runs on another CLIP,
    they give way to the new model's own: a preset's tag (``clip_pretrained``, random for ``tiny``), a
    model directory's recorded weights. Random CLIP weights stay random.
    """
    old, new = before.model_spec.config, after.model_spec.config
    same = old.clip_model == new.clip_model if old is not None and new is not None else before.model == after.model
    if same or after.pretrained is None:
        return after
    weights = new.clip_pretrained if new is not None and after.model_spec.is_preset else None
    logger.info("%s runs on another CLIP than %s: pretrained=%s gives way to %s, the model's own (set pretrained to "
                "choose)", _model_name(after), _model_name(before), after.pretrained, weights or "null")
    return Recipe.from_dict({**after.to_dict(), "pretrained": weights})


def _model_name(recipe: Recipe) -> str:
    config = recipe.model_spec.config
    return recipe.model if config is None else f"{recipe.model} (CLIP {config.clip_model})"


def apply_overrides(recipe: Recipe, overrides: Sequence[str]) -> Recipe:
    """``recipe`` with ``key.sub=value`` items applied, each converted to its field's type, then checked.

    When an item changes the model (``model=``, ``model_overrides.clip_model=``) to one on another CLIP and
    no item sets ``pretrained``, the recipe's CLIP weights give way to the new model's own: a preset's tag
    (random weights for ``tiny``), a model directory's recorded weights.

    Raises:
        ConfigError: malformed item, unknown key, a section given a plain value, or a value of the
            wrong type or out of range (the message names the key, the value and what is expected).
    """
    data = recipe.to_dict()
    given = set()
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
        hint, rule = field_type(Recipe, key)
        *path, last = key.split(".")
        node = data
        for part in path:
            node = node.setdefault(part, {})
        node[last] = parse_text(raw, hint, key, rule)
        given.add(path[0] if path else last)
    updated = Recipe.from_dict(data)
    return updated if "pretrained" in given else _weights_follow_clip(recipe, updated)


def list_recipes() -> list[str]:
    """Names of the built-in recipes."""
    root = resources.files("clip2depth.training") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def read_recipe_file(path: str | Path) -> Recipe:
    """A recipe YAML file (a user's, or a run folder's ``config.yaml``), checked."""
    path = Path(path)
    try:
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError(f"cannot read recipe file {path} ({exc})") from None
    return _parse(text, str(path))


def _parse(text: str, source: str) -> Recipe:
    data = load_yaml(text, source)
    if data is None:
        raise ConfigError(f"{source} is empty; it must hold a recipe (see the built-in ones: "
                          f"{', '.join(list_recipes())})")
    return Recipe.from_dict(data, source=source)


def load_recipe(name_or_path: str) -> Recipe:
    """A built-in recipe by name, or a YAML file by path."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml"):
        if not path.is_file():
            raise ConfigError(f"recipe file {path} does not exist")
        return read_recipe_file(path)
    if name_or_path not in list_recipes():
        raise ConfigError(f"unknown recipe {name_or_path!r}; built-in: {', '.join(list_recipes())}, "
                          "or pass a YAML file")
    text = (resources.files("clip2depth.training") / "recipes" / f"{name_or_path}.yaml").read_text()
    return _parse(text, f"recipe {name_or_path}")


def build_recipe(name_or_path: str, *, data_root: str | None = None, model: str | None = None,
                 pretrained: str | None = None, overrides: Sequence[str] = ()) -> Recipe:
    """A recipe with the CLI's shortcut flags (``--data-root``, ``--model``, ``--pretrained``) and then
    the ``--set`` overrides applied, checked (see :func:`apply_overrides` for the CLIP weights of a
    ``--model`` on another CLIP)."""
    shortcuts = [f"{key}={value}" for key, value in
                 (("data.root", data_root), ("model", model), ("pretrained", pretrained)) if value]
    return apply_overrides(load_recipe(name_or_path), [*shortcuts, *overrides])

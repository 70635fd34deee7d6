"""The typed training configuration: a :class:`Recipe` of sections read from YAML, checked when built.

Built-in recipes are YAML files in ``clip2depth/training/recipes`` (``nyu``, ``kitti``, ``synthetic``,
``folder``); a user's YAML file has the same layout. Every field has a default, so a file names only
what it changes. A key the dataclasses do not know is refused with the file and key named; a value
of the wrong type or out of range is refused with the key, the value and what is expected. All of it
happens before any model is built or any CLIP weight is fetched.

``--set section.key=value`` is converted to the field's type (int, float, bool, text, list, optional,
choices). ``model_overrides`` and ``data.kwargs`` / ``data.val_kwargs`` stay open: their keys are
fields of :class:`~clip2depth.models.config.ModelConfig` (checked by it) or options of the dataset
class (checked by :func:`clip2depth.data.build_dataset`).
"""

from __future__ import annotations

import dataclasses
import types
import typing
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml

from clip2depth.data import DATASETS
from clip2depth.errors import ConfigError
from clip2depth.evaluation.metrics import CROPS
from clip2depth.evaluation.protocol import EvalSettings
from clip2depth.models.checkpoint import is_model_dir, read_model_dir
from clip2depth.models.config import ModelConfig, list_models, load_preset

AmpMode = Literal["auto", "fp32", "bf16", "fp16"]


def _fail(key: str, value: Any, expected: str) -> ConfigError:
    return ConfigError(f"{key}={value!r} is invalid: expected {expected}")


def _check_range(key: str, value: float | None, *, low: float | None = None, high: float | None = None,
                 low_open: bool = False) -> None:
    if value is None:
        return
    if low is not None and (value <= low if low_open else value < low):
        kind = "an integer" if isinstance(value, int) else "a number"
        raise _fail(key, value, f"{kind} {'>' if low_open else '>='} {low:g}"
                    + (f" and <= {high:g}" if high is not None else ""))
    if high is not None and value > high:
        raise _fail(key, value, f"a number <= {high:g}")


def _check_pair(key: str, pair: tuple[float, float], *, positive: bool = True) -> None:
    if positive and min(pair) <= 0:
        raise _fail(key, list(pair), "two positive numbers [low, high]")
    if pair[0] > pair[1]:
        raise _fail(key, list(pair), "an ordered range [low, high] with low <= high")


@dataclass
class DataSection:
    """Which dataset trains and validates the model."""

    dataset: str = "synthetic"
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
    val_fraction: float = 0.0
    """``folder`` only, without ``val_list``: fraction of the train list held out for validation (chosen
    by ``train.seed``), in [0, 1); 0 validates on ``<root>/<val_split>.txt``."""
    depth_scale: float = 1000.0
    """``folder`` only: integer depth images hold metres × this (1000 = millimetres, 256 = KITTI style)."""
    kwargs: dict[str, Any] = field(default_factory=dict)
    """More options of the training dataset class (e.g. ``size`` for ``synthetic``)."""
    val_kwargs: dict[str, Any] = field(default_factory=dict)
    """More options of the validation dataset class."""

    def __post_init__(self) -> None:
        if self.dataset not in DATASETS:
            raise _fail("data.dataset", self.dataset, f"one of {', '.join(DATASETS)}")
        _check_range("data.val_fraction", self.val_fraction, low=0.0)
        if self.val_fraction >= 1.0:
            raise _fail("data.val_fraction", self.val_fraction, "a fraction in [0, 1)")
        _check_range("data.depth_scale", self.depth_scale, low=0.0, low_open=True)
        folder_only = {"train_list": self.train_list, "val_list": self.val_list,
                       "val_fraction": self.val_fraction or None}
        used = [k for k, v in folder_only.items() if v is not None]
        if used and self.dataset != "folder":
            raise ConfigError(f"data.{used[0]} applies to data.dataset=folder only (this recipe uses "
                              f"{self.dataset!r}); remove it or set data.dataset=folder")


@dataclass
class AugmentSection:
    """Training augmentation (docs/method.md#training-recipe)."""

    crop_size: tuple[int, int] = (416, 544)
    """Random crop (height, width) in pixels; both positive."""
    rotate_deg: float = 2.5
    """Largest random rotation, degrees (>= 0)."""
    flip_p: float = 0.5
    """Probability of a horizontal flip, in [0, 1]."""
    gamma: tuple[float, float] = (0.9, 1.1)
    """Random gamma range [low, high]."""
    brightness: tuple[float, float] = (0.75, 1.25)
    """Random brightness factor range [low, high]."""
    color: tuple[float, float] = (0.9, 1.1)
    """Random per-channel colour factor range [low, high]."""
    kb_crop: bool = False
    """Apply the KITTI KB crop (352×1216) before the random crop."""

    def __post_init__(self) -> None:
        if min(self.crop_size) < 1:
            raise _fail("augment.crop_size", list(self.crop_size), "two positive integers [height, width]")
        _check_range("augment.rotate_deg", self.rotate_deg, low=0.0)
        _check_range("augment.flip_p", self.flip_p, low=0.0, high=1.0)
        for name in ("gamma", "brightness", "color"):
            _check_pair(f"augment.{name}", getattr(self, name))


@dataclass
class EvalSection:
    """How validation (and the demo's test) measures the model (docs/method.md#evaluation-protocol)."""

    crop: str | None = None
    """Evaluation crop name (``nyu_eigen``, ``kitti_garg``, ...) or None for the whole image."""
    min_depth: float = 1e-3
    """Ground truth counts where ``min_depth < depth < max_depth`` (metres); > 0."""
    max_depth: float = 10.0
    """Upper end of the valid ground truth (metres); predictions are clamped to it."""
    flip_tta: bool = False
    """Average the prediction with that of the flipped image."""
    limit: int | None = None
    """Validate on the first N images only (>= 1); None for all."""

    def __post_init__(self) -> None:
        if self.crop is not None and self.crop not in CROPS:
            raise _fail("eval.crop", self.crop, f"one of {', '.join(CROPS)} or null")
        _check_range("eval.min_depth", self.min_depth, low=0.0, low_open=True)
        if self.min_depth >= self.max_depth:
            raise ConfigError(f"eval.min_depth={self.min_depth:g} must be smaller than eval.max_depth="
                              f"{self.max_depth:g}")
        _check_range("eval.limit", self.limit, low=1)

    def settings(self) -> EvalSettings:
        """The evaluation protocol these fields describe."""
        return EvalSettings(min_depth=self.min_depth, max_depth=self.max_depth, crop=self.crop,
                            flip_tta=self.flip_tta)


@dataclass
class TrainSection:
    """Optimisation, schedule, loss and run-keeping."""

    epochs: int = 25
    """Passes over the training set (>= 1); ignored when ``max_steps`` is set."""
    max_steps: int | None = None
    """Total optimizer steps (>= 1); None: ``epochs`` × batches per epoch."""
    batch_size: int = 8
    """Global batch (split over ranks and accumulation micro-batches); >= 1."""
    accumulation: int = 1
    """Micro-batches accumulated per optimizer step; >= 1."""
    lr: float = 3e-4
    """Peak learning rate of the one-cycle schedule; > 0."""
    weight_decay: float = 0.01
    """AdamW weight decay of matrices (biases and norms get none); >= 0."""
    pct_start: float = 0.3
    """Fraction of the steps spent warming up, in [0, 1]."""
    div_factor: float = 25.0
    """Starting learning rate = ``lr / div_factor``; > 0."""
    final_div_factor: float = 100.0
    """Final learning rate = starting rate / ``final_div_factor``; > 0."""
    grad_clip: float = 1.0
    """Largest gradient norm; 0 turns clipping off."""
    loss_min_depth: float = 1e-3
    """Ground truth below this (metres) is left out of the loss; > 0."""
    variance_focus: float = 0.85
    """SILog's lambda, in [0, 1]."""
    loss_scale: float = 10.0
    """SILog's outer factor; > 0."""
    loss_per_image: bool = False
    """SILog per image, averaged (exactly additive over DDP ranks), instead of over the whole batch."""
    amp: AmpMode = "auto"
    """Mixed precision on CUDA: ``auto`` (bf16 where supported, else fp16), ``bf16``, ``fp16`` or ``fp32``."""
    compile: bool = False
    """Run the model through ``torch.compile``."""
    num_workers: int = 4
    """Data-loading worker processes; >= 0."""
    seed: int = 42
    """Seed of the model's initialisation, the data order and the augmentation."""
    log_every: int = 50
    """Write a training-loss record every N steps; >= 1."""
    val_every: int = 2000
    """Validate and checkpoint every N steps (and at the end); >= 1."""
    max_nonfinite: int = 20
    """Stop after this many non-finite losses in a row; >= 0."""
    tensorboard: bool = False
    """Also write TensorBoard event files (needs the ``tensorboard`` package)."""
    time_limit_s: float | None = None
    """Stop (with a checkpoint, resumable) after this many seconds; None for no limit."""

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "accumulation", "log_every", "val_every"):
            _check_range(f"train.{name}", getattr(self, name), low=1)
        _check_range("train.max_steps", self.max_steps, low=1)
        for name in ("num_workers", "max_nonfinite"):
            _check_range(f"train.{name}", getattr(self, name), low=0)
        for name in ("lr", "div_factor", "final_div_factor", "loss_min_depth", "loss_scale", "time_limit_s"):
            _check_range(f"train.{name}", getattr(self, name), low=0.0, low_open=True)
        for name in ("weight_decay", "grad_clip"):
            _check_range(f"train.{name}", getattr(self, name), low=0.0)
        for name in ("pct_start", "variance_focus"):
            _check_range(f"train.{name}", getattr(self, name), low=0.0, high=1.0)
        if self.batch_size % self.accumulation:
            raise ConfigError(f"train.batch_size={self.batch_size} must be divisible by train.accumulation="
                              f"{self.accumulation}")


SECTIONS: dict[str, type] = {"data": DataSection, "augment": AugmentSection, "eval": EvalSection,
                             "train": TrainSection}
"""Recipe section name → its dataclass."""

_OPEN_FIELDS = {"model_overrides", "data.kwargs", "data.val_kwargs"}
_LEGACY_KEYS = {"clip_pretrained": "pretrained"}  # older run folders wrote this name


@dataclass
class Recipe:
    """Everything one training run needs; ``config.yaml`` in the run folder is this, resolved."""

    model: str = "tiny"
    """Preset name or model directory to start from."""
    pretrained: str | None = None
    """CLIP weights: an open_clip tag, ``hf-hub:...`` or a local file; None for random CLIP weights."""
    model_overrides: dict[str, Any] = field(default_factory=dict)
    """ModelConfig fields changed from the preset (e.g. ``mirror_length``), checked by ModelConfig."""
    data: DataSection = field(default_factory=DataSection)
    augment: AugmentSection = field(default_factory=AugmentSection)
    eval: EvalSection = field(default_factory=EvalSection)
    train: TrainSection = field(default_factory=TrainSection)

    @classmethod
    def from_dict(cls, data: Any, *, source: str) -> Recipe:
        """Build and check a recipe from nested dicts (a YAML file's content); ``source`` (a file, or "" for
        the command line) names it in errors."""
        where = f"{source}: " if source else ""
        if not isinstance(data, dict):
            raise ConfigError(f"{where}a recipe must be a mapping of sections, got {type(data).__name__}")
        data = {_LEGACY_KEYS.get(k, k): v for k, v in data.items()}
        values: dict[str, Any] = {}
        hints = typing.get_type_hints(cls)
        for key, value in data.items():
            if key not in hints:
                raise ConfigError(f"{where}unknown key {key!r}; known: {', '.join(hints)}")
            if key in SECTIONS:
                values[key] = _build_section(SECTIONS[key], value, key, source)
            else:
                values[key] = coerce(value, hints[key], key)
        try:
            return cls(**values)
        except ConfigError as exc:
            raise ConfigError(f"{where}{exc}") from None

    def to_dict(self) -> dict[str, Any]:
        """Plain nested dicts and lists (tuples as lists), as written to ``config.yaml``."""
        return yaml.safe_load(yaml.safe_dump(dataclasses.asdict(self)))

    def __post_init__(self) -> None:
        if not isinstance(self.model_overrides, dict):
            raise _fail("model_overrides", self.model_overrides, "a mapping of model config fields")
        hints = typing.get_type_hints(ModelConfig)  # unknown fields are left for ModelConfig to name
        self.model_overrides = {k: coerce(v, hints[k], f"model_overrides.{k}") if k in hints else v
                                for k, v in self.model_overrides.items()}
        self.model_config()  # unknown or invalid model fields fail here, before anything is built

    def model_config(self) -> ModelConfig | None:
        """The model config this recipe trains (preset or model directory + overrides); None for a remote model."""
        if self.model in list_models():
            base = load_preset(self.model)
        elif is_model_dir(self.model):
            base = ModelConfig.from_dict(read_model_dir(self.model)["model"], source=f"{self.model}/config.json")
        else:
            if not self.model.startswith("hf-hub:"):
                if "/" in self.model or "\\" in self.model:
                    raise ConfigError(f"model={self.model!r}: no model directory (config.json + model.safetensors) "
                                      f"there; pass a trained run's best/ or last/, or a preset: "
                                      f"{', '.join(list_models())}")
                raise _fail("model", self.model, f"a preset ({', '.join(list_models())}), a model directory "
                            "or hf-hub:ORG/NAME")
            return None
        try:
            return base.replace(**self.model_overrides)
        except (TypeError, ValueError) as exc:
            raise ConfigError(f"model_overrides: {exc}") from None

    def replace(self, **changes: Any) -> Recipe:
        """A checked copy with top-level fields or whole sections replaced."""
        return Recipe.from_dict({**self.to_dict(), **changes}, source="recipe")


def _build_section(cls: type, value: Any, name: str, source: str) -> Any:
    where = f"{source}: " if source else ""
    if value is None:
        return cls()
    if not isinstance(value, dict):
        raise ConfigError(f"{where}{name}={value!r} is invalid: {name} is a section; set its fields as "
                          f"{name}.KEY (known: {', '.join(f.name for f in dataclasses.fields(cls))})")
    hints = typing.get_type_hints(cls)
    unknown = sorted(set(value) - set(hints))
    if unknown:
        raise ConfigError(f"{where}unknown key {name}.{unknown[0]}; known in {name}: {', '.join(hints)}")
    try:
        return cls(**{k: coerce(v, hints[k], f"{name}.{k}") for k, v in value.items()})
    except ConfigError as exc:
        raise ConfigError(f"{where}{exc}") from None


_TRUE, _FALSE = {"true", "yes", "on", "1"}, {"false", "no", "off", "0"}
_NULL = {"null", "none", ""}


def describe(hint: Any) -> str:
    """What a value of type ``hint`` looks like, for error messages."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        return f"{describe(inner[0])} or null"
    if origin is Literal:
        return "one of " + ", ".join(map(str, args))
    if origin is list:
        return f"a list of {_plural(args[0])}"
    if origin is tuple:
        return f"a list of {len(args)} {_plural(args[0])}, e.g. [{', '.join(['1'] * len(args))}]"
    if origin is dict or hint is dict:
        return "a mapping {key: value}"
    return {int: "an integer", float: "a number", bool: "true or false", str: "text"}.get(hint, str(hint))


def _plural(hint: Any) -> str:
    plurals = {int: "integers", float: "numbers", bool: "true/false values", str: "texts"}
    return plurals.get(hint, f"{describe(hint)} items")


def coerce(value: Any, hint: Any, key: str) -> Any:
    """``value`` (from YAML, or the text of ``--set``) as type ``hint``; ConfigError naming ``key`` if it is not."""
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.strip().lower() in _NULL):
            return None
        return coerce(value, next(a for a in args if a is not type(None)), key)
    if origin is Literal:
        text = str(value).strip() if isinstance(value, str) else value
        if text not in args:
            raise _fail(key, value, describe(hint))
        return text
    if origin is tuple:
        if isinstance(value, str):
            value = _yaml_value(value, key)
        if not isinstance(value, list | tuple) or len(value) != len(args):
            raise _fail(key, value, describe(hint))
        return tuple(coerce(v, a, key) for v, a in zip(value, args, strict=True))
    if origin is list:
        if isinstance(value, str):
            value = _yaml_value(value, key)
        if not isinstance(value, list | tuple):
            raise _fail(key, value, describe(hint))
        return [coerce(v, args[0], key) for v in value]
    if origin is dict or hint is dict:
        if isinstance(value, str):
            value = _yaml_value(value, key)
        if not isinstance(value, dict):
            raise _fail(key, value, describe(hint))
        return value
    if hint is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in _TRUE | _FALSE:
            return value.strip().lower() in _TRUE
        raise _fail(key, value, describe(hint))
    if hint in (int, float):
        if isinstance(value, bool):
            raise _fail(key, value, describe(hint))
        if isinstance(value, str):
            value = _number(value, key, hint)
        if hint is int and isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int | float) or (hint is int and not isinstance(value, int)):
            raise _fail(key, value, describe(hint))
        if value != value or value in (float("inf"), float("-inf")):
            raise _fail(key, value, "a finite number")
        return hint(value)
    if hint is str:
        if not isinstance(value, str) or not value.strip():
            raise _fail(key, value, describe(hint))
        return value
    raise TypeError(f"no conversion for {hint!r}")


def _number(text: str, key: str, hint: Any) -> int | float:
    try:
        return int(text.strip())
    except ValueError:
        pass
    try:
        return float(text.strip())
    except ValueError:
        raise _fail(key, text, describe(hint)) from None


def _yaml_value(raw: str, key: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        raise ConfigError(f"{key}={raw!r} is not a valid value (write lists as [1, 2])") from None
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as text; users mean a number
        try:
            return float(value)
        except ValueError:
            pass
    return value


def _field_hint(parts: list[str], key: str) -> Any:
    """The type of recipe field ``parts`` (``["train", "lr"]``); ConfigError for an unknown key."""
    top = typing.get_type_hints(Recipe)
    if parts[0] not in top:
        raise ConfigError(f"--set {key}: unknown key {parts[0]!r}; known: {', '.join(top)}")
    if parts[0] in SECTIONS:
        if len(parts) == 1:
            return None
        hints = typing.get_type_hints(SECTIONS[parts[0]])
        if parts[1] not in hints:
            raise ConfigError(f"--set {key}: unknown key {parts[1]!r} in section {parts[0]}; known: "
                              f"{', '.join(hints)}")
        if len(parts) > 2 and ".".join(parts[:2]) not in _OPEN_FIELDS:
            raise ConfigError(f"--set {key}: {'.'.join(parts[:2])} has no sub-keys")
        return hints[parts[1]]
    if len(parts) > 1 and parts[0] not in _OPEN_FIELDS:
        raise ConfigError(f"--set {key}: {parts[0]} has no sub-keys")
    return top[parts[0]]


def apply_overrides(recipe: Recipe, overrides: list[str] | tuple[str, ...]) -> Recipe:
    """``recipe`` with ``key.sub=value`` items applied, each converted to its field's type, then checked.

    Raises:
        ConfigError: malformed item, unknown key, a section given a plain value, or a value of the
            wrong type or out of range (the message names the key, the value and what is expected).
    """
    data = recipe.to_dict()
    for item in overrides:
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not key:
            raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. train.lr=1e-3")
        parts = key.split(".")
        hint = _field_hint(parts, key)
        if hint is None:
            raise ConfigError(f"--set {item}: {key} is a section, not a value; set one of its fields, e.g. "
                              f"{key}.{dataclasses.fields(SECTIONS[key])[0].name}=...")
        node = data
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        open_part = len(parts) > 2 or (len(parts) == 2 and parts[0] == "model_overrides")
        try:
            node[parts[-1]] = _yaml_value(raw, key) if open_part else coerce(raw, hint, key)
        except ConfigError as exc:
            raise ConfigError(f"--set {exc}") from None
    return Recipe.from_dict(data, source="")


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
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        where = getattr(exc, "problem_mark", None)
        at = f" (line {where.line + 1})" if where is not None else ""
        raise ConfigError(f"{source} is not valid YAML{at}; fix or replace the file") from None
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
                 pretrained: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> Recipe:
    """A recipe with the CLI's shortcut flags (``--data-root``, ``--model``, ``--pretrained``) and then
    the ``--set`` overrides applied, checked."""
    shortcuts = [f"{key}={value}" for key, value in
                 (("data.root", data_root), ("model", model), ("pretrained", pretrained)) if value]
    return apply_overrides(load_recipe(name_or_path), [*shortcuts, *overrides])

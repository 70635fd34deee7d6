"""Training recipes: YAML files in ``clip2depth/recipes`` (``nyu``, ``kitti``, ``synthetic``) + overrides."""

from __future__ import annotations

import copy
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clip2depth.errors import ConfigError

# Sub-dictionaries whose keys are free-form (passed on to the model factory or the dataset class).
_OPEN_KEYS = {"model_overrides", "data.kwargs", "data.val_kwargs"}


def list_recipes() -> list[str]:
    root = resources.files("clip2depth.training") / "recipes"
    return sorted(p.name[:-5] for p in root.iterdir() if p.name.endswith(".yaml"))


def load_recipe(name_or_path: str) -> dict[str, Any]:
    """A recipe by built-in name or YAML path, as a nested dict."""
    path = Path(name_or_path)
    if path.suffix in (".yaml", ".yml") and path.is_file():
        text = path.read_text()
    else:
        if name_or_path not in list_recipes():
            raise ConfigError(f"unknown recipe {name_or_path!r}; built-in: {', '.join(list_recipes())}, "
                              "or pass a YAML file")
        text = (resources.files("clip2depth.training") / "recipes" / f"{name_or_path}.yaml").read_text()
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ConfigError(f"recipe {name_or_path} is not valid YAML: {exc}") from exc
    if not isinstance(data, dict):
        raise ConfigError(f"recipe {name_or_path} must be a mapping")
    return data


def _parse_value(raw: str, item: str) -> Any:
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError as exc:
        raise ConfigError(f"--set {item!r}: value is not valid YAML ({exc})") from exc
    if isinstance(value, str):  # YAML 1.1 reads "1e-4" as a string; users mean a number
        try:
            return float(value)
        except ValueError:
            pass
    return value


def apply_overrides(recipe: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply ``key.sub=value`` overrides (values parsed as YAML); unknown keys are refused."""
    out = copy.deepcopy(recipe)
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected key=value, e.g. train.lr=1e-3")
        key, raw = item.split("=", 1)
        value = _parse_value(raw, item)
        parts = key.strip().split(".")
        node = out
        for depth, part in enumerate(parts[:-1]):
            prefix = ".".join(parts[: depth + 1])
            if part not in node or not isinstance(node[part], dict):
                if prefix in _OPEN_KEYS or ".".join(parts[:depth]) in _OPEN_KEYS:
                    node = node.setdefault(part, {})
                    continue
                raise ConfigError(f"--set {key}: unknown recipe section {prefix!r}")
            node = node[part]
        parent = ".".join(parts[:-1])
        if parts[-1] not in node and parent not in _OPEN_KEYS:
            raise ConfigError(f"--set {key}: unknown recipe key; known here: {', '.join(sorted(node))}")
        node[parts[-1]] = value
    return out


def build_recipe(name_or_path: str, *, data_root: str | None = None, model: str | None = None,
                 clip_pretrained: str | None = None, overrides: list[str] | tuple[str, ...] = ()) -> dict[str, Any]:
    """A recipe with the CLI's shortcut flags (``--data-root``, ``--model``, ``--clip-pretrained``) and
    ``--set`` overrides applied, in that order."""
    recipe = load_recipe(name_or_path)
    if data_root:
        recipe["data"]["root"] = data_root
    if model:
        recipe["model"] = model
    if clip_pretrained:
        recipe["clip_pretrained"] = clip_pretrained
    return apply_overrides(recipe, list(overrides))

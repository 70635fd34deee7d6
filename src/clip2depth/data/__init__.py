"""Datasets (a registry keyed by name), training augmentation and the shared sample format.

Every dataset returns dict samples (``image`` (3, H, W) in [0, 1], ``depth`` (1, H, W) metres with
0 = invalid, ``focal``, ``path``, ``name``; see :mod:`clip2depth.data.base`) and carries the
evaluation protocol as attributes ``min_depth``, ``max_depth`` and ``default_crop``.
"""

from __future__ import annotations

import inspect
import os
from typing import Any

from clip2depth.data.base import DepthDataset, Sample, Transform
from clip2depth.data.folder import FolderDataset
from clip2depth.data.kitti import KITTIDataset
from clip2depth.data.nyu import NYUDataset, NYUMatDataset
from clip2depth.data.synthetic import SyntheticDataset, render_sequence
from clip2depth.data.transforms import TrainAugment, kb_crop, kb_crop_box, paste_into_canvas
from clip2depth.errors import ConfigError, DataError

DATASETS: dict[str, type[DepthDataset]] = {
    "nyu": NYUDataset,
    "nyu-mat": NYUMatDataset,
    "kitti": KITTIDataset,
    "folder": FolderDataset,
    "synthetic": SyntheticDataset,
}
"""Dataset name (as given to ``--dataset``) → class."""

ROOT_ENV_VARS: dict[str, str] = {
    "nyu": "CLIP2DEPTH_NYU_ROOT",
    "nyu-mat": "CLIP2DEPTH_NYU_ROOT",
    "kitti": "CLIP2DEPTH_KITTI_ROOT",
}
"""Environment variables read for the data root when none is passed."""

KITTI_GT_ENV_VAR = "CLIP2DEPTH_KITTI_GT_ROOT"


def _env_or_fail(value: Any, env_var: str, what: str, how: str) -> Any:
    if value is not None:
        return value
    from_env = os.environ.get(env_var)
    if from_env:
        return from_env
    raise DataError(f"{what} is not set: pass {how} or set the environment variable {env_var}")


def build_dataset(
    name: str,
    *,
    split: str,
    root: str | os.PathLike[str] | None = None,
    transform: Transform | None = None,
    **kwargs: Any,
) -> DepthDataset:
    """Build dataset ``name`` (a key of :data:`DATASETS`) for ``split``.

    ``root`` defaults to the environment variable of :data:`ROOT_ENV_VARS` (read now, not at import);
    KITTI's ``gt_root`` defaults to ``CLIP2DEPTH_KITTI_GT_ROOT``. ``folder`` takes ``list_file=`` (or a
    root holding ``<split>.txt``); ``synthetic`` takes no root. Other keyword arguments go to the
    dataset class.

    Raises:
        ConfigError: unknown dataset name or option.
        DataError: a required root is missing (the message names ``--data-root`` and the variable).
    """
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    cls = DATASETS[name]
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in kwargs if k not in params or k in ("self", "root", "split", "transform"))
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option {', '.join(unknown)}")

    if name == "synthetic":
        if root is not None:
            raise ConfigError("the synthetic dataset is generated, it takes no data root")
        return cls(split, transform=transform, **kwargs)
    if name == "folder":
        if root is None and kwargs.get("list_file") is None:
            raise DataError("the folder dataset needs a list file (list_file=) or --data-root holding <split>.txt")
        return cls(root=root, split=split, transform=transform, **kwargs)
    root = _env_or_fail(root, ROOT_ENV_VARS[name], f"the {name} data root", "--data-root")
    if name == "kitti":
        kwargs["gt_root"] = _env_or_fail(
            kwargs.get("gt_root"), KITTI_GT_ENV_VAR, "the KITTI ground-truth root", "gt_root"
        )
    return cls(root, split=split, transform=transform, **kwargs)


__all__ = [
    "DATASETS",
    "ROOT_ENV_VARS",
    "DepthDataset",
    "FolderDataset",
    "KITTIDataset",
    "NYUDataset",
    "NYUMatDataset",
    "Sample",
    "SyntheticDataset",
    "TrainAugment",
    "build_dataset",
    "kb_crop",
    "kb_crop_box",
    "paste_into_canvas",
    "render_sequence",
]

"""The one table of datasets: name → class, data roots and their environment variables, protocol.

The evaluation protocol of a dataset (valid depth range, default crop) lives on its class
(:class:`~clip2depth.data.base.DepthDataset` attributes); :class:`DatasetSpec` exposes it next to what
building the dataset needs, so the command line, training recipes and the evaluator read one place.
"""

from __future__ import annotations

import inspect
import os
from dataclasses import dataclass
from typing import Any

from clip2depth.data.base import DepthDataset, Transform
from clip2depth.data.folder import FolderDataset
from clip2depth.data.kitti import KITTIDataset
from clip2depth.data.nyu import NYUDataset, NYUMatDataset
from clip2depth.data.synthetic import SyntheticDataset
from clip2depth.errors import ConfigError, DataError


@dataclass(frozen=True)
class DatasetSpec:
    """One registered dataset.

    Attributes:
        name: the key given to ``--dataset`` and to recipes' ``data.dataset``.
        cls: the dataset class.
        summary: one line for ``--help``.
        root_env: environment variable read for the data root when none is passed (None: no root,
            or the root is optional).
        gt_root_env: environment variable read for a separate ground-truth root (KITTI).
    """

    name: str
    cls: type[DepthDataset]
    summary: str
    root_env: str | None = None
    gt_root_env: str | None = None

    @property
    def default_crop(self) -> str | None:
        """Name of the standard evaluation crop (a key of ``evaluation.metrics.CROPS``), or None."""
        return self.cls.default_crop

    @property
    def min_depth(self) -> float:
        """Valid ground truth is strictly above this (metres)."""
        return self.cls.min_depth

    @property
    def png_scale(self) -> float:
        """16-bit depth PNGs (ground truth and ``--save-png`` predictions) hold metres × this."""
        return self.cls.png_scale

    @property
    def max_depth(self) -> float:
        """Valid ground truth is strictly below this, and predictions are capped to it (metres)."""
        return self.cls.max_depth

    def input_size(self, options: dict[str, Any]) -> tuple[int, int] | None:
        """(H, W) of the images evaluation predicts from this dataset built with ``options``; None: its files decide."""
        return self.cls.input_size(**options)

    def describe(self) -> str:
        """``name: summary (crop ..., depth a-b m, root $VAR)``, for ``--help``."""
        parts = [f"crop {self.default_crop or 'none'}", f"depth {self.min_depth:g}-{self.max_depth:g} m"]
        if self.root_env:
            parts.append(f"root ${self.root_env}")
        if self.gt_root_env:
            parts.append(f"ground truth ${self.gt_root_env}")
        return f"{self.name}: {self.summary} ({', '.join(parts)})"


DATASETS: dict[str, DatasetSpec] = {
    spec.name: spec
    for spec in (
        DatasetSpec("nyu", NYUDataset, "NYU Depth v2, BTS folder layout", root_env="CLIP2DEPTH_NYU_ROOT"),
        DatasetSpec("nyu-mat", NYUMatDataset, "NYU Depth v2 labeled .mat file (file or its folder as root)",
                    root_env="CLIP2DEPTH_NYU_ROOT"),
        DatasetSpec("kitti", KITTIDataset, "KITTI Eigen split, BTS layout", root_env="CLIP2DEPTH_KITTI_ROOT",
                    gt_root_env="CLIP2DEPTH_KITTI_GT_ROOT"),
        DatasetSpec("folder", FolderDataset, "your own images and depth maps named in a list file"),
        DatasetSpec("synthetic", SyntheticDataset, "rendered scenes with exact depth, nothing to download"),
    )
}
"""Dataset name (as given to ``--dataset``) → :class:`DatasetSpec`."""


def dataset_spec(name: str) -> DatasetSpec:
    """The registered dataset ``name``; :class:`ConfigError` listing the names when unknown."""
    if name not in DATASETS:
        raise ConfigError(f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)}")
    return DATASETS[name]


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

    ``root`` defaults to the spec's ``root_env`` variable (read now, not at import); KITTI's
    ``gt_root`` defaults to ``gt_root_env``. ``folder`` takes ``list_file=`` (or a root holding
    ``<split>.txt``); ``synthetic`` takes no root. Other keyword arguments go to the dataset class.

    Raises:
        ConfigError: unknown dataset name or option.
        DataError: a required root is missing (the message names ``--data-root`` and the variable).
    """
    spec = dataset_spec(name)
    params = inspect.signature(spec.cls.__init__).parameters
    unknown = sorted(k for k in kwargs if k not in params or k in ("self", "root", "split", "transform"))
    if unknown:
        raise ConfigError(f"dataset {name!r} has no option {', '.join(unknown)}")

    if spec.cls is SyntheticDataset:
        if root is not None:
            raise ConfigError("the synthetic dataset is generated, it takes no data root")
        return spec.cls(split, transform=transform, **kwargs)
    if spec.cls is FolderDataset:
        if root is None and kwargs.get("list_file") is None:
            raise DataError(
                "the folder dataset needs a list file (--list-file, list_file=) or a --data-root holding <split>.txt"
            )
        return spec.cls(root=root, split=split, transform=transform, **kwargs)
    if spec.root_env is not None:
        root = _env_or_fail(root, spec.root_env, f"the {name} data root", "--data-root")
    if spec.gt_root_env is not None:
        kwargs["gt_root"] = _env_or_fail(
            kwargs.get("gt_root"), spec.gt_root_env, f"the {name} ground-truth root", "--gt-root"
        )
    return spec.cls(root, split=split, transform=transform, **kwargs)

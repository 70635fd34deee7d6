"""Datasets (a registry keyed by name), training augmentation and the shared sample format.

Every dataset returns dict samples (``image`` (3, H, W) in [0, 1], ``depth`` (1, H, W) metres with
0 = invalid, ``focal``, ``path``, ``name``; see :mod:`clip2depth.data.base`) and carries the
evaluation protocol as attributes ``min_depth``, ``max_depth`` and ``default_crop``. The registry
(:mod:`clip2depth.data.registry`) names them all.
"""

from __future__ import annotations

from clip2depth.data.base import DepthDataset, Sample
from clip2depth.data.folder import FolderDataset
from clip2depth.data.kitti import KITTIDataset
from clip2depth.data.nyu import NYUDataset, NYUMatDataset
from clip2depth.data.registry import DATASETS, DatasetSpec, build_dataset, dataset_spec
from clip2depth.data.synthetic import SyntheticDataset, render_sequence
from clip2depth.data.transforms import TrainAugment, kb_crop, kb_crop_box, paste_into_canvas

__all__ = [
    "DATASETS",
    "DatasetSpec",
    "DepthDataset",
    "FolderDataset",
    "KITTIDataset",
    "NYUDataset",
    "NYUMatDataset",
    "Sample",
    "SyntheticDataset",
    "TrainAugment",
    "build_dataset",
    "dataset_spec",
    "kb_crop",
    "kb_crop_box",
    "paste_into_canvas",
    "render_sequence",
]

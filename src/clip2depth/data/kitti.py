"""KITTI, Eigen split, BTS layout: raw RGB frames plus the official annotated depth."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from clip2depth.data.base import (
    DepthDataset,
    Sample,
    Transform,
    packaged_list,
    parse_list,
    read_depth,
    read_list,
    read_rgb,
    require_dir,
)
from clip2depth.data.transforms import KB_HEIGHT, KB_WIDTH, kb_crop_box
from clip2depth.errors import ConfigError, DataError

logger = logging.getLogger(__name__)

KITTI_DEPTH_SCALE = 256.0
"""KITTI depth PNGs hold metres × 256."""

KITTI_SPLITS = ("train", "val", "test")
"""``val`` is the Eigen test split (697 lines, 652 with ground truth), as BTS evaluates online."""

_LIST_FILES = {"train": "eigen_train_files_with_gt.txt.gz", "test": "eigen_test_files_with_gt.txt"}
# The annotated-depth archive unpacks into train/ and val/; BTS's lists name drives without that level.
_GT_SUBDIRS = ("", "train", "val")


class KITTIDataset(DepthDataset):
    """KITTI Eigen split in the BTS layout.

    RGB ``<root>/<date>/<drive>_sync/image_02/data/<frame>.png``; ground truth
    ``<gt_root>/<drive>_sync/proj_depth/groundtruth/image_02/<frame>.png`` (uint16, metres × 256; also
    found under ``<gt_root>/train/`` or ``<gt_root>/val/`` as the archive unpacks). List lines whose
    ground truth is ``None`` are left out and counted in ``skipped_no_gt``. Sample ``name`` is
    ``<date>_<drive>_sync_<frame>``, the stem BTS's evaluator expects.

    Args:
        root: folder of the raw KITTI dates.
        gt_root: folder of the annotated depth.
        split: ``train``, ``val`` (= test) or ``test``.
        list_file: a ``rgb depth focal`` list to use instead of the packaged Eigen one.
        kb_crop: True crops image and depth to the 352×1216 KB crop (training). False crops only the
            image and keeps the full ground truth, with ``crop_box`` = (top, left, h, w) in the sample
            so the prediction can be pasted into a zero canvas of the ground-truth size (evaluation).
            Default: True for ``train``, False otherwise.
        transform: applied to each sample.
    """

    min_depth = 1e-3
    max_depth = 80.0
    default_crop = "kitti_garg"

    @classmethod
    def input_size(cls, **options: Any) -> tuple[int, int]:
        """The 352×1216 KB crop (evaluation predicts it and pastes it into the ground truth's canvas)."""
        return KB_HEIGHT, KB_WIDTH
    png_scale = KITTI_DEPTH_SCALE

    def __init__(
        self,
        root: str | Path,
        *,
        gt_root: str | Path,
        split: str = "test",
        list_file: str | Path | None = None,
        kb_crop: bool | None = None,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform=transform)
        if split not in KITTI_SPLITS:
            raise ConfigError(f"unknown KITTI split {split!r}; choose one of {', '.join(KITTI_SPLITS)}")
        self.split = "test" if split == "val" else split
        self.root = require_dir(root, "KITTI RGB root")
        self.gt_root = require_dir(gt_root, "KITTI ground-truth root")
        if list_file is not None:
            lines, source = read_list(list_file), str(list_file)
        else:
            lines, source = packaged_list(_LIST_FILES[self.split]), _LIST_FILES[self.split]
        self.entries, self.skipped_no_gt, self.bad_lines = parse_list(lines, source)
        self.kb_crop = (self.split == "train") if kb_crop is None else kb_crop
        logger.info(
            "KITTI %s: %d images from %s (%d without ground truth skipped)",
            self.split,
            len(self.entries),
            source,
            self.skipped_no_gt,
        )

    def __len__(self) -> int:
        return len(self.entries)

    def _gt_path(self, rel: str) -> Path:
        candidates = [self.gt_root / sub / rel for sub in _GT_SUBDIRS]
        for path in candidates:
            if path.is_file():
                return path
        raise DataError(
            f"{candidates[0]}: ground-truth file not found (also looked under train/ and val/); "
            "check the ground-truth root"
        )

    def load(self, index: int) -> Sample:
        rgb_rel, depth_rel, focal = self.entries[index]
        rgb_path = self.root / rgb_rel
        image = read_rgb(rgb_path)
        depth = read_depth(self._gt_path(depth_rel), scale=KITTI_DEPTH_SCALE)
        h, w = image.shape[-2:]
        if depth.shape[-2:] != (h, w):
            raise DataError(f"{rgb_path}: image {h}×{w} and ground truth {tuple(depth.shape[-2:])} differ")
        try:
            top, left, ch, cw = kb_crop_box(h, w)
        except DataError as exc:
            raise DataError(f"{rgb_path}: {exc}") from None
        image = image[:, top : top + ch, left : left + cw].contiguous()
        rel = Path(rgb_rel)
        drive = rel.parts[1] if len(rel.parts) > 1 else rel.parts[0]
        sample: Sample = {
            "image": image,
            "focal": focal,
            "path": str(rgb_path),
            "name": f"{drive}_{rel.stem}",
        }
        if self.kb_crop:
            sample["depth"] = depth[:, top : top + ch, left : left + cw].contiguous()
        else:
            sample["depth"] = depth
            sample["crop_box"] = (top, left, ch, cw)
        return sample

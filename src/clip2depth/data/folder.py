"""A user's own data: a list file of ``rgb depth [focal]`` lines."""

from __future__ import annotations

import logging
from pathlib import Path

from clip2depth.data.base import (
    LIST_FORMAT,
    DepthDataset,
    Sample,
    Transform,
    parse_list,
    read_depth,
    read_list,
    read_rgb,
)
from clip2depth.errors import ConfigError, DataError

logger = logging.getLogger(__name__)


class FolderDataset(DepthDataset):
    """Images and depth maps named in a list file, one ``rgb depth [focal]`` line per sample.

    Fields are separated by spaces, or by tabs when a path holds spaces
    (:data:`~clip2depth.data.base.LIST_FORMAT`); malformed lines are left out and listed in
    ``bad_lines`` with their numbers.

    Paths are relative to ``root`` when given, else to the list file's folder (absolute paths work
    too). A missing focal is :data:`~clip2depth.data.base.NYU_FOCAL`; lines with depth ``None`` are
    left out and counted in ``skipped_no_gt``. Depth images hold ``metres × depth_scale``; ``.npy``
    files hold float metres (no scale). Sample ``name`` is the RGB path relative to its base folder,
    without extension, with path separators replaced by ``_``.

    Args:
        list_file: the list; if None, ``<root>/<split>.txt``.
        root: the folder paths are relative to.
        split: picks ``<root>/<split>.txt`` when ``list_file`` is None.
        depth_scale: divisor of integer depth images (1000 = millimetres, 256 = KITTI style).
        min_depth, max_depth: the valid ground-truth range for evaluation (metres).
        transform: applied to each sample.
    """

    default_crop = None

    def __init__(
        self,
        list_file: str | Path | None = None,
        *,
        root: str | Path | None = None,
        split: str | None = None,
        depth_scale: float = 1000.0,
        min_depth: float = 1e-3,
        max_depth: float = 10.0,
        transform: Transform | None = None,
    ) -> None:
        super().__init__(transform=transform)
        if list_file is None:
            if root is None or split is None:
                raise ConfigError("the folder dataset needs a list file, or a root holding <split>.txt")
            list_file = Path(root) / f"{split}.txt"
        self.list_file = Path(list_file).expanduser()
        self.base = Path(root).expanduser() if root is not None else self.list_file.parent
        if not self.base.is_dir():
            raise DataError(f"folder dataset root {self.base} is not a directory; pass the right --data-root")
        if depth_scale <= 0:
            raise ConfigError(f"depth_scale must be positive, got {depth_scale}")
        self.depth_scale = float(depth_scale)
        self.png_scale = self.depth_scale
        self.min_depth = float(min_depth)
        self.max_depth = float(max_depth)
        parsed = parse_list(read_list(self.list_file), str(self.list_file))
        self.entries, self.skipped_no_gt, self.bad_lines = parsed
        if not self.entries:
            raise DataError(f"{self.list_file}: no line with ground truth; expected {LIST_FORMAT}")
        logger.info("folder dataset: %d images from %s", len(self.entries), self.list_file)

    def __len__(self) -> int:
        return len(self.entries)

    def load(self, index: int) -> Sample:
        rgb_rel, depth_rel, focal = self.entries[index]
        rgb_path = self.base / rgb_rel
        image = read_rgb(rgb_path)
        depth = read_depth(self.base / depth_rel, scale=self.depth_scale)
        if image.shape[-2:] != depth.shape[-2:]:
            raise DataError(
                f"{rgb_path}: image {tuple(image.shape[-2:])} and depth {tuple(depth.shape[-2:])} differ in size"
            )
        stem = Path(rgb_rel).with_suffix("").as_posix().lstrip("/")
        return {
            "image": image,
            "depth": depth,
            "focal": focal,
            "path": str(rgb_path),
            "name": stem.replace("/", "_").replace("\\", "_"),
        }

"""Render the web app's example images: a few held-out synthetic scenes saved as small JPEGs.

Run once from the repository root when the scenes change; the JPEGs are committed with the package::

    python tools/make_app_examples.py
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image

from clip2depth.data.synthetic import SyntheticDataset

OUT = Path(__file__).resolve().parents[1] / "src" / "clip2depth" / "app" / "examples"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=3, help="scenes to render (default 3)")
    parser.add_argument("--out", type=Path, default=OUT, help=f"output folder (default {OUT})")
    args = parser.parse_args()
    scenes = SyntheticDataset("test", size=(240, 320), length=args.count, seed=7)
    args.out.mkdir(parents=True, exist_ok=True)
    for index in range(args.count):
        sample = scenes[index]
        rgb = np.rint(sample["image"].permute(1, 2, 0).numpy() * 255.0).clip(0, 255).astype(np.uint8)
        path = args.out / f"room_{index + 1}.jpg"
        Image.fromarray(rgb).save(path, quality=88)
        print(path)


if __name__ == "__main__":
    main()

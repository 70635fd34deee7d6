"""Training augmentation and the KITTI KB crop."""

import pytest
import torch

from clip2depth.data.transforms import TrainAugment, kb_crop, kb_crop_box, paste_into_canvas, rotate
from clip2depth.errors import DataError


def _sample(h=60, w=80, seed=0):
    g = torch.Generator().manual_seed(seed)
    image = torch.rand(3, h, w, generator=g)
    # a few discrete depth values plus invalid (0) holes
    depth = torch.randint(0, 6, (1, h, w), generator=g).float() * 1.5
    return {"image": image, "depth": depth, "focal": 500.0, "path": "scene/rgb_00001.jpg", "name": "x"}


def test_depth_values_only_original_or_zero():
    sample = _sample()
    aug = TrainAugment(crop_size=(40, 56), rotate_deg=10.0)
    before = set(sample["depth"].unique().tolist()) | {0.0}
    for seed in range(5):
        out = aug(sample, torch.Generator().manual_seed(seed))
        assert out["image"].shape == (3, 40, 56) and out["depth"].shape == (1, 40, 56)
        assert set(out["depth"].unique().tolist()) <= before
        assert 0.0 <= out["image"].min() and out["image"].max() <= 1.0
        assert out["focal"] == 500.0 and out["name"] == "x"


def test_flip_moves_image_and_depth_together():
    sample = _sample()
    aug = TrainAugment(crop_size=(60, 80), rotate_deg=0.0, flip_p=1.0, color_p=0.0)
    out = aug(sample, torch.Generator().manual_seed(0))
    assert torch.equal(out["image"], sample["image"].flip(-1))
    assert torch.equal(out["depth"], sample["depth"].flip(-1))  # invalid pixels stay where they go


def test_same_generator_state_same_result():
    sample = _sample()
    aug = TrainAugment(crop_size=(40, 56), rotate_deg=2.5, brightness=(0.75, 1.25), color_p=1.0)
    a = aug(sample, torch.Generator().manual_seed(7))
    b = aug(sample, torch.Generator().manual_seed(7))
    c = aug(sample, torch.Generator().manual_seed(8))
    assert torch.equal(a["image"], b["image"]) and torch.equal(a["depth"], b["depth"])
    assert not torch.equal(a["image"], c["image"])


def test_input_sample_not_modified():
    sample = _sample()
    image = sample["image"].clone()
    TrainAugment(crop_size=(40, 56), rotate_deg=2.5, color_p=1.0)(sample, torch.Generator().manual_seed(0))
    assert torch.equal(sample["image"], image)


def test_rotation_fills_with_zero():
    depth = torch.ones(1, 40, 40)
    out = rotate(depth, 20.0, mode="nearest")
    assert out[0, 0, 0] == 0 and out[0, 20, 20] == 1
    assert set(out.unique().tolist()) <= {0.0, 1.0}


def test_crop_larger_than_image_names_path_and_size():
    with pytest.raises(DataError, match=r"scene/rgb_00001\.jpg.*416×544"):
        TrainAugment(crop_size=(416, 544), rotate_deg=0.0)(_sample(), torch.Generator().manual_seed(0))


def test_kb_crop_and_paste_back():
    assert kb_crop_box(375, 1242) == (23, 13, 352, 1216)
    frame = torch.arange(375 * 1242, dtype=torch.float32).view(1, 375, 1242)
    crop = kb_crop(frame)
    assert crop.shape == (1, 352, 1216)
    assert crop[0, 0, 0] == frame[0, 23, 13] and crop[0, -1, -1] == frame[0, -1, 13 + 1215]
    assert kb_crop(frame.numpy()).shape == (1, 352, 1216)
    canvas = paste_into_canvas(crop, kb_crop_box(375, 1242), (375, 1242))
    assert canvas.shape == (1, 375, 1242)
    assert torch.equal(canvas[:, 23:, 13 : 13 + 1216], crop)
    assert canvas[:, :23].abs().sum() == 0 and canvas[:, :, :13].abs().sum() == 0
    with pytest.raises(DataError):
        kb_crop_box(300, 1242)


def test_kb_crop_in_augment_then_a_window_of_it():
    depth = torch.arange(375 * 1242, dtype=torch.float32).view(1, 375, 1242)  # each value names its pixel
    sample = {"image": torch.rand(3, 375, 1242), "depth": depth, "path": "k.png"}
    aug = TrainAugment(crop_size=(352, 704), rotate_deg=0.0, flip_p=0.0, color_p=0.0, kb_crop=True)
    lefts = set()
    for seed in range(4):
        out = aug(sample, torch.Generator().manual_seed(seed))
        top, left = divmod(int(out["depth"][0, 0, 0]), 1242)
        assert top == 23 and 13 <= left <= 13 + 1216 - 704  # the KB crop's rows, a window inside its columns
        assert torch.equal(out["depth"], depth[:, 23:, left : left + 704])
        assert torch.equal(out["image"], sample["image"][:, 23:, left : left + 704])
        lefts.add(left)
    assert len(lefts) > 1  # the window is random


def test_usable_as_dataset_transform_without_generator():
    from clip2depth.data.synthetic import SyntheticDataset

    plain = SyntheticDataset("train", size=(48, 64), length=2)[0]
    ds = SyntheticDataset("train", size=(48, 64), length=2, transform=TrainAugment(crop_size=(32, 48), rotate_deg=0.0,
                                                                                   flip_p=0.0, color_p=0.0))
    torch.manual_seed(0)
    first = ds[0]
    torch.manual_seed(0)
    again = ds[0]  # the global RNG (seeded per DataLoader worker) decides the crop
    assert torch.equal(first["depth"], again["depth"]) and torch.equal(first["image"], again["image"])
    windows = [(t, left) for t in range(17) for left in range(17)
               if torch.equal(plain["depth"][:, t : t + 32, left : left + 48], first["depth"])
               and torch.equal(plain["image"][:, t : t + 32, left : left + 48], first["image"])]
    assert windows  # a 32×48 window of the scene, image and depth cut at the same place

"""Photo-crop sets: disjoint bands per split, determinism, the packaged set, and a user's photo folder."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cann_distill.core.errors import RecipeError
from cann_distill.core.recipe_load import load_recipe
from cann_distill.data.loading import count_classes, data_fingerprint, load_splits
from cann_distill.data.photos import BANDS, band_box, crop_boxes, crop_set, packaged_photos_dir, photo_files


def _photo(color: tuple[int, int, int], size: tuple[int, int] = (120, 80)) -> Image.Image:
    rng = np.random.default_rng(sum(color))
    noise = rng.integers(0, 40, (size[1], size[0], 3))
    return Image.fromarray(np.clip(np.array(color) + noise, 0, 255).astype(np.uint8))


@pytest.mark.parametrize("width, height", [(300, 200), (200, 300)])
def test_crops_stay_inside_their_split_bands(width: int, height: int) -> None:
    rng = np.random.default_rng(0)
    for split, bands in BANDS.items():
        allowed = [band_box(width, height, b) for b in bands]
        for left, top, right, bottom in crop_boxes(width, height, bands, 60, rng):
            assert right - left == bottom - top >= 8
            assert any(x0 <= left and y0 <= top and right <= x1 and bottom <= y1 for x0, y0, x1, y1 in allowed), (split, left, top)
    # test and train bands never overlap (the long side is cut in five)
    train = [band_box(width, height, b) for b in BANDS["train"]]
    test = band_box(width, height, BANDS["test"][0])
    axis = 0 if width >= height else 1
    assert all(box[axis + 2] <= test[axis] or box[axis] >= test[axis + 2] for box in train)


def test_crop_set_is_deterministic_and_labelled_by_photo() -> None:
    photos = [_photo((200, 30, 30)), _photo((30, 200, 30))]
    a, b = crop_set(photos, "val", 4, 16, seed=3), crop_set(photos, "val", 4, 16, seed=3)
    assert a.pixels.shape == (8, 16, 16, 3) and a.pixels.dtype == np.uint8
    assert np.array_equal(a.pixels, b.pixels) and a.targets.tolist() == [0] * 4 + [1] * 4
    assert a.pixels[:4, ..., 0].mean() > a.pixels[:4, ..., 1].mean()  # the red photo's crops are red
    assert not np.array_equal(a.pixels, crop_set(photos, "val", 4, 16, seed=4).pixels)
    with pytest.raises(ValueError, match="unknown split"):
        crop_set(photos, "holdout", 1, 16, seed=0)


def test_packaged_photos_load_as_three_splits() -> None:
    assert len(photo_files(packaged_photos_dir())) == 9
    assert (packaged_photos_dir() / "ATTRIBUTION.md").is_file()
    r = load_recipe(None, overrides=["data.source=photos", "data.crops_per_class=[6, 2, 3]"])
    splits = load_splits(r.data)
    assert (len(splits.train), len(splits.val), len(splits.test)) == (54, 18, 27)
    assert splits.train.classes[0] == "aitzgorri" and count_classes(r.data) == 9
    assert tuple(splits.test.fetch(0).shape) == (3, 32, 32)


def test_a_folder_of_photos_is_a_dataset(tmp_path: Path) -> None:
    for name, color in (("red", (200, 30, 30)), ("green", (30, 200, 30)), ("blue", (30, 30, 200))):
        _photo(color).save(tmp_path / f"{name}.png")
    r = load_recipe(None, overrides=["data.source=photos", f"data.root={tmp_path}", "data.crops_per_class=[4, 2, 2]"])
    splits = load_splits(r.data)
    assert splits.train.classes == ["blue", "green", "red"] and len(splits.val) == 6
    before = data_fingerprint(r.data)
    _photo((90, 90, 90)).save(tmp_path / "red.png")  # an edited photo is a new dataset
    assert data_fingerprint(r.data) != before


def test_bad_photo_folders_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(RecipeError, match="photo folder not found"):
        load_recipe(None, overrides=["data.source=photos", f"data.root={tmp_path / 'missing'}"])
    _photo((1, 2, 3)).save(tmp_path / "only.png")
    with pytest.raises(RecipeError, match="needs at least two photos"):
        load_recipe(None, overrides=["data.source=photos", f"data.root={tmp_path}"])
    with pytest.raises(RecipeError, match=r"data\.crops_per_class"):  # the packaged photos too, not only a folder
        load_recipe(None, overrides=["data.source=photos", "data.crops_per_class=[0, 2, 2]"])


def test_the_predict_example_is_the_middle_of_sunsets_test_band() -> None:
    """The quickstart's `predict` input: a crop the packaged recipe's test split could hold, not the whole photo."""
    import cann_distill.datasets.examples as examples

    example = Image.open(Path(examples.__file__).parent / "sunset_test_band.png").convert("RGB")
    photo = Image.open(packaged_photos_dir() / "sunset.jpg").convert("RGB")
    (test_band,) = BANDS["test"]
    left, top, right, bottom = band_box(photo.width, photo.height, test_band)
    side = min(right - left, bottom - top)
    y = top + (bottom - top - side) // 2
    assert example.size == (side, side)
    assert np.array_equal(np.asarray(example), np.asarray(photo.crop((left, y, left + side, y + side))))

"""Image loading: every mode becomes 8-bit RGB; bad files are named."""
from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from glmix_viz.images import Preprocess, denormalize, expand_image_paths, load_image, normalize, preprocess


def test_modes_become_rgb(tmp_path):
    gray16 = Image.fromarray((np.arange(64 * 48).reshape(48, 64) * 21).astype(np.uint16))
    gray16.save(tmp_path / "g16.png")
    rgba = Image.new("RGBA", (10, 10), (255, 0, 0, 0))  # fully transparent red -> white
    rgba.save(tmp_path / "rgba.png")
    pal = Image.new("P", (10, 10), 3)
    pal.putpalette([0, 0, 0, 10, 20, 30, 0, 0, 0, 200, 100, 50])
    pal.save(tmp_path / "pal.png")
    Image.new("L", (12, 8), 77).save(tmp_path / "gray.jpg")
    g16 = np.asarray(load_image(tmp_path / "g16.png"))
    assert g16.shape == (48, 64, 3) and g16.dtype == np.uint8
    assert g16[0, 0, 0] == 0 and g16[-1, -1, 0] == round((64 * 48 - 1) * 21 / 65535 * 255)
    assert np.asarray(load_image(tmp_path / "rgba.png"))[0, 0].tolist() == [255, 255, 255]
    assert np.asarray(load_image(tmp_path / "pal.png"))[0, 0].tolist() == [200, 100, 50]
    assert np.asarray(load_image(tmp_path / "gray.jpg")).shape == (8, 12, 3)


def test_exif_rotation_applied(tmp_path):
    img = Image.new("RGB", (40, 20), (0, 0, 0))
    exif = Image.Exif()
    exif[0x0112] = 6  # rotate 90 CW on display
    img.save(tmp_path / "rot.jpg", exif=exif)
    assert load_image(tmp_path / "rot.jpg").size == (20, 40)


def test_large_images_shrunk(tmp_path):
    Image.new("RGB", (3000, 1000)).save(tmp_path / "big.png")
    assert load_image(tmp_path / "big.png", max_side=1500).size == (1500, 500)


def test_bad_files_named(tmp_path):
    (tmp_path / "notes.jpg").write_text("not an image")
    with pytest.raises(ValueError, match="notes.jpg: not a readable image"):
        load_image(tmp_path / "notes.jpg")
    Image.new("RGB", (64, 64), (9, 9, 9)).save(tmp_path / "ok.jpg")
    data = (tmp_path / "ok.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match="cut.jpg"):
        load_image(tmp_path / "cut.jpg")
    with pytest.raises(FileNotFoundError, match="missing.png"):
        load_image(tmp_path / "missing.png")


def test_expand_paths(tmp_path):
    for name in ("a.jpg", "b.PNG", "c.txt"):
        (tmp_path / name).write_bytes(b"x")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.jpg").write_bytes(b"x")
    paths, unmatched = expand_image_paths([tmp_path, str(tmp_path / "sub" / "*.jpg"), tmp_path / "a.jpg",
                                           "nope*"])
    assert [p.name for p in paths] == ["a.jpg", "b.PNG", "d.jpg"]
    assert unmatched == ["nope*"]


def test_preprocess_crop_matches_timm_eval_transform():
    import timm.data

    from glmix_viz.cli import DEMO_IMAGE

    img = load_image(DEMO_IMAGE)  # a photo, 451x300
    x, view = preprocess(img, Preprocess(input_size=224))
    assert x.shape == (3, 224, 224) and view.shape == (224, 224, 3)
    tf = timm.data.create_transform(224, crop_pct=0.875, interpolation="bicubic")
    ref = tf(img)
    assert (x - ref).abs().max() < 1e-5  # same geometry, resampling and normalisation
    back = denormalize(x[None], Preprocess().mean, Preprocess().std)[0]
    assert np.abs(back.astype(int) - view.astype(int)).max() <= 1


def test_preprocess_whole_keeps_aspect():
    x, view = preprocess(Image.new("RGB", (451, 300)), Preprocess(input_size=224, mode="whole"))
    assert x.shape == (3, 224, 352)  # 451 * 224/300 = 336.7 -> multiple of 32
    with pytest.raises(ValueError, match="mode='square'"):
        Preprocess(mode="square")


def test_normalize_uint8_and_float_agree_with_hand_computation():
    pixels = np.array([[[255, 0, 128]]], dtype=np.uint8)
    expected = [(1 - 0.485) / 0.229, (0 - 0.456) / 0.224, (128 / 255 - 0.406) / 0.225]
    np.testing.assert_allclose(normalize(pixels)[:, 0, 0].numpy(), expected, rtol=1e-6)
    np.testing.assert_allclose(normalize(pixels.astype(np.float32) / 255).numpy(), normalize(pixels).numpy(),
                               rtol=1e-6)
    with pytest.raises(ValueError, match=r"\(H, W, 3\)"):
        normalize(np.zeros((4, 4), np.uint8))

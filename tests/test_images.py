"""The image loader: deep modes on their true scale, EXIF orientation, decompression bombs, any PIL mode."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

import uncertain_repr as ur
from uncertain_repr.images import INTENSITY_RANGES, decode_image, eval_transform, load_images, to_rgb

from .conftest import REPO_ROOT

IMAGES = REPO_ROOT / "examples" / "images"


@pytest.fixture(scope="module")
def model():
    return ur.load_model("efficientnet_lite0.pvu")


def uncertainties(model, paths) -> torch.Tensor:
    with torch.no_grad():
        return model(load_images(paths, eval_transform(model))).uncertainty


def test_16_bit_and_float_copies_of_a_photo_give_the_8_bit_uncertainty(model, tmp_path):
    gray = np.asarray(Image.open(IMAGES / "chelsea.png").convert("L"))
    Image.fromarray(gray).save(tmp_path / "gray8.png")
    # a real 16-bit copy: each 8-bit level v spread over [257 v - 128, 257 v + 128] (still reads back as v)
    noise = np.random.default_rng(0).integers(-128, 129, gray.shape)
    deep = np.clip(gray.astype(np.int64) * 257 + noise, 0, 65535)
    Image.fromarray(deep.astype(np.uint16)).save(tmp_path / "gray16.png")
    Image.fromarray(deep.astype(np.uint16)).save(tmp_path / "gray16.tif")
    Image.fromarray((gray / 255.0).astype(np.float32)).save(tmp_path / "float.tif")
    Image.fromarray(deep.astype(np.int32)).save(tmp_path / "int32.tif")
    files = ["gray16.png", "gray16.tif", "float.tif", "int32.tif"]
    assert [Image.open(tmp_path / f).mode for f in files] == ["I;16", "I;16", "F", "I"]
    for name in files:
        assert np.array_equal(np.asarray(decode_image(tmp_path / name))[..., 0], gray), name
    unc = uncertainties(model, [tmp_path / "gray8.png", *(tmp_path / f for f in files)])
    torch.testing.assert_close(unc[1:], unc[:1].expand(4), rtol=0, atol=1e-6)
    # before the fix, PIL clipped the 16-bit copy to white: a very different number
    with Image.open(tmp_path / "gray16.png") as image:
        clipped = eval_transform(model)(image.convert("RGB"))
    with torch.no_grad():
        assert abs(float(model(clipped[None]).uncertainty) - float(unc[0])) > 0.1


def test_exif_orientation_is_applied(tmp_path):
    photo = Image.open(IMAGES / "rocket.jpg")
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    photo.save(tmp_path / "rotated.jpg", exif=exif.tobytes(), quality=95)
    with Image.open(tmp_path / "rotated.jpg") as raw:
        stored = np.asarray(raw.convert("RGB"))
    decoded = np.asarray(decode_image(tmp_path / "rotated.jpg"))
    assert decoded.shape == (photo.width, photo.height, 3)  # displayed upright: width and height swap
    assert np.array_equal(decoded, np.rot90(stored, k=-1))  # the stored pixels turned 90 degrees clockwise


def png_header_only(path, width: int, height: int) -> None:
    """A PNG whose header claims width x height (the pixel data is never reached)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    path.write_bytes(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b""))


@pytest.mark.parametrize("megapixels", [100, 180])  # above PIL's warning limit and above its error limit
def test_decompression_bomb_is_a_clear_error(tmp_path, megapixels):
    path = tmp_path / "huge.png"
    png_header_only(path, 10_000, megapixels * 100)
    with pytest.raises(ValueError, match=rf"refusing to decode image {path}: {megapixels}000000 pixels is more than "
                       r"PIL.Image.MAX_IMAGE_PIXELS = 89478485 \(PIL's guard against decompression bombs\)"):
        decode_image(path)


def test_missing_folder_and_corrupt_files_name_the_path(tmp_path):
    with pytest.raises(FileNotFoundError, match=r"image not found: .*nope\.png$"):
        decode_image(tmp_path / "nope.png")
    with pytest.raises(FileNotFoundError, match=r"\(it is a folder\)"):
        decode_image(tmp_path)
    (tmp_path / "text.jpg").write_text("not an image")
    with pytest.raises(ValueError, match=r"cannot decode image .*text\.jpg: cannot identify image file"):
        decode_image(tmp_path / "text.jpg")
    data = (IMAGES / "rocket.jpg").read_bytes()
    (tmp_path / "cut.jpg").write_bytes(data[: len(data) // 3])
    with pytest.raises(ValueError, match=r"cannot decode image .*cut\.jpg"):
        decode_image(tmp_path / "cut.jpg")
    with pytest.raises(ValueError, match="no images given"):
        load_images([], eval_transform({"input_size": (3, 8, 8)}))


# ------------------------------------------------------------------------------ any mode, any values
STANDARD_MODES = ("1", "L", "LA", "P", "PA", "RGB", "RGBA", "RGBX", "CMYK", "YCbCr")
DEEP_MODES = tuple(INTENSITY_RANGES)
NUMPY_TYPES = {"I;16": "<u2", "I;16L": "<u2", "I;16B": ">u2", "I;16N": "=u2", "I": "<i4", "F": "<f4"}


@st.composite
def images(draw):
    """(PIL image, expected RGB uint8 array or None when a ValueError is expected)."""
    mode = draw(st.sampled_from(STANDARD_MODES + DEEP_MODES))
    width, height = draw(st.integers(1, 9)), draw(st.integers(1, 9))
    if mode in STANDARD_MODES:
        bands = len(Image.new(mode, (1, 1)).getbands())
        raw = draw(st.binary(min_size=width * height * bands, max_size=width * height * bands))
        if mode == "1":
            image = Image.frombytes("L", (width, height), raw[: width * height]).point(lambda v: 255 * (v > 127))
            image = image.convert("1")
        else:
            image = Image.frombytes(mode, (width, height), raw)
        return image, np.asarray(image.convert("RGB"))
    black, white = INTENSITY_RANGES[mode]
    if mode == "F":
        elements = st.floats(-2.0, 3.0, width=32) | st.just(float("nan")) | st.floats(0.0, 1.0, width=32)
    else:
        dtype_max = 65535 if mode != "I" else 2**31 - 1
        dtype_min = 0 if mode != "I" else -(2**31)
        elements = st.integers(dtype_min, dtype_max) | st.integers(0, 65535)
    values = np.array(draw(st.lists(elements, min_size=width * height, max_size=width * height)), dtype=np.float64)
    values = values.reshape(height, width)
    array = values.astype(NUMPY_TYPES[mode])
    image = Image.frombytes(mode, (width, height), array.tobytes(), "raw", mode)
    stored = np.asarray(image, dtype=np.float64)
    if not np.isfinite(stored).all() or stored.min() < black or stored.max() > white:
        return image, None
    gray = np.round((stored - black) * 255.0 / (white - black)).astype(np.uint8)
    return image, np.repeat(gray[..., None], 3, axis=2)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(images())
def test_every_mode_becomes_rgb_on_its_scale_or_a_clear_error(case):
    image, expected = case
    if expected is None:
        with pytest.raises(ValueError, match=rf"a mode {image.mode} image must hold values in \["):
            to_rgb(image)
        return
    rgb = to_rgb(image)
    assert rgb.mode == "RGB" and rgb.size == image.size
    assert np.array_equal(np.asarray(rgb), expected)
    tensor = torch.from_numpy(np.asarray(rgb).copy()).permute(2, 0, 1).float() / 255  # what ToTensor gives
    assert tensor.shape == (3, image.height, image.width) and 0 <= tensor.min() and tensor.max() <= 1


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(images(), st.sampled_from(["png", "tiff"]))
def test_files_decode_like_the_images_they_hold(tmp_path, case, fmt):
    image, expected = case
    path = tmp_path / f"image.{fmt}"
    try:
        image.save(path)
    except (OSError, KeyError, ValueError):
        return  # PIL cannot write this mode in this format
    with Image.open(path) as reread:
        saved, saved_expected = reread.copy(), expected
    if saved.mode != image.mode or not np.array_equal(np.asarray(saved), np.asarray(image), equal_nan=True):
        return  # the writer changed the pixels (e.g. PNG stores I as I;16): nothing to compare
    if saved_expected is None:
        with pytest.raises(ValueError, match=r"cannot decode image .*: a mode .* image must hold values in"):
            decode_image(path)
    else:
        assert np.array_equal(np.asarray(decode_image(path)), saved_expected)


def test_empty_and_unconvertible_images_are_clear_errors():
    with pytest.raises(ValueError, match=r"the image has no pixels \(size 0x3\)"):
        to_rgb(Image.new("L", (0, 3)))
    with pytest.raises(ValueError, match="cannot convert a mode La image to RGB"):
        to_rgb(Image.new("La", (2, 2)))


def test_dataset_files_decode_16_bit_images_on_their_scale_too(tmp_path):
    from uncertain_repr.data.sources import FileImages

    gray = np.asarray(Image.open(IMAGES / "brick.png"))
    Image.fromarray(gray.astype(np.uint16) * 257).save(tmp_path / "brick16.png")
    assert np.array_equal(np.asarray(FileImages([tmp_path / "brick16.png"]).load(0))[..., 1], gray)


@pytest.mark.parametrize("mode", ["L", "I;16", "RGB"])
@pytest.mark.parametrize("compression", [None, "tiff_lzw"])
def test_uncompressed_tiff_with_a_turning_orientation_is_turned_not_garbled(tmp_path, mode, compression):
    # PIL applies a TIFF's orientation itself while loading; for an uncompressed one-band file opened by
    # name it memory-maps the raster at the turned size and returns scrambled pixels without an error
    gray = np.asarray(Image.open(IMAGES / "chelsea.png").convert("L"))
    stored = {"L": gray, "I;16": gray.astype(np.uint16) * 257, "RGB": np.repeat(gray[..., None], 3, axis=2)}[mode]
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    path = tmp_path / "turned.tif"
    Image.fromarray(stored).save(path, exif=exif.tobytes(), compression=compression)
    upright = np.rot90(gray, k=-1)
    decoded = np.asarray(decode_image(path))
    assert decoded.shape == (*upright.shape, 3)
    assert np.array_equal(decoded, np.repeat(upright[..., None], 3, axis=2))
    from uncertain_repr.data.sources import FileImages

    assert np.array_equal(np.asarray(FileImages([path]).load(0)), np.repeat(upright[..., None], 3, axis=2))

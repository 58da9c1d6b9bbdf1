"""backbones/images.py: the safe loader every untrusted image goes through."""

from __future__ import annotations

import io
import struct
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from explainzoo.backbones import ExplainzooError, images
from explainzoo.backbones.images import MAX_SIDE, ImageError, load_image

RED = (220, 30, 40)


def _encode(im: Image.Image, fmt: str, **kwargs) -> bytes:
    buf = io.BytesIO()
    im.save(buf, format=fmt, **kwargs)
    return buf.getvalue()


def _png_chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


def _png_header_only(width: int, height: int) -> bytes:
    """A PNG that claims a size in its header (its pixel data is a stub)."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(b"\x00" * 16))
        + _png_chunk(b"IEND", b"")
    )


def _png_rgb16(arr: np.ndarray) -> bytes:
    """A 16-bit-per-channel RGB PNG (Pillow cannot write one), encoded by hand."""
    h, w, _ = arr.shape
    raw = b"".join(b"\x00" + arr[y].astype(">u2").tobytes() for y in range(h))
    ihdr = struct.pack(">IIBBBBB", w, h, 16, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", ihdr)
        + _png_chunk(b"IDAT", zlib.compress(raw))
        + _png_chunk(b"IEND", b"")
    )


def _solid(size=(40, 30), color=RED, mode="RGB") -> Image.Image:
    return Image.new(mode, size, color)


@pytest.mark.parametrize("fmt", ["PNG", "JPEG", "WEBP", "BMP", "GIF"])
def test_allowed_formats_decode_to_rgb(fmt, tmp_path: Path):
    path = tmp_path / f"img.{fmt.lower()}"
    path.write_bytes(_encode(_solid(), fmt))
    for source in (path, str(path), path.read_bytes()):
        im = load_image(source)
        assert im.mode == "RGB" and im.size == (40, 30)
        px = np.asarray(im).reshape(-1, 3).mean(0)
        assert np.allclose(px, RED, atol=12), (fmt, px)


def test_errors_are_explainzoo_errors():
    assert issubclass(ImageError, ExplainzooError)


def test_text_renamed_png_is_refused(tmp_path: Path):
    path = tmp_path / "notes.png"
    path.write_text("this is not an image\n" * 20)
    with pytest.raises(ImageError, match="not an image in a supported format"):
        load_image(path)


@pytest.mark.parametrize("fmt", ["TIFF", "ICO", "PPM"])
def test_formats_outside_the_allowlist_are_refused(fmt):
    data = _encode(_solid((32, 32)), fmt)
    with pytest.raises(ImageError, match="PNG, JPEG, WebP, BMP or GIF"):
        load_image(data)


def test_svg_is_refused():
    svg = b'<svg xmlns="http://www.w3.org/2000/svg" width="64" height="64"><rect width="64" height="64"/></svg>'
    with pytest.raises(ImageError, match="supported format"):
        load_image(svg)


def test_corrupt_and_truncated_files_are_refused():
    jpeg = _encode(Image.fromarray(np.random.default_rng(0).integers(0, 255, (64, 64, 3), np.uint8)), "JPEG")
    with pytest.raises(ImageError, match="corrupt or truncated"):
        load_image(jpeg[: len(jpeg) // 3])
    png = _encode(_solid((64, 64)), "PNG")
    broken = png[:40] + bytes(b ^ 0xFF for b in png[40:60]) + png[60:]
    with pytest.raises(ImageError):
        load_image(broken)


def test_empty_and_missing_files(tmp_path: Path):
    empty = tmp_path / "empty.png"
    empty.write_bytes(b"")
    with pytest.raises(ImageError, match="empty"):
        load_image(empty)
    with pytest.raises(ImageError, match="no image file"):
        load_image(tmp_path / "missing.png")
    with pytest.raises(ImageError, match="no image given"):
        load_image(None)
    with pytest.raises(ImageError, match="expected an image file"):
        load_image(12345)


def test_oversized_file_is_refused_before_reading(tmp_path: Path):
    path = tmp_path / "huge.png"
    with path.open("wb") as fh:
        fh.truncate(images.MAX_FILE_BYTES + 1)  # sparse: nothing is written
    with pytest.raises(ImageError, match="MiB"):
        load_image(path)


def test_pixel_cap_is_checked_from_the_header():
    # more pixels than our cap but fewer than Pillow's bomb limit: our check
    with pytest.raises(ImageError, match="MP"):
        load_image(_png_header_only(8000, 6000))
    # more than twice Pillow's limit: Pillow's DecompressionBombError, turned into ours
    with pytest.raises(ImageError, match="too many pixels"):
        load_image(_png_header_only(30000, 30000))
    assert images.MAX_PIXELS < Image.MAX_IMAGE_PIXELS


@pytest.mark.parametrize("size", [(1, 1), (4, 300), (7, 7)])
def test_tiny_images_get_a_clear_message(size):
    with pytest.raises(ImageError, match=r"only \d+x\d+ pixels"):
        load_image(_encode(_solid(size), "PNG"))


def test_extreme_aspect_is_refused():
    with pytest.raises(ImageError, match="aspect ratio"):
        load_image(_encode(_solid((2000, 20)), "PNG"))
    assert load_image(_encode(_solid((400, 40)), "PNG")).size == (400, 40)  # 10:1 is fine


def test_sixteen_bit_grayscale_png_is_scaled_not_clipped():
    ramp = np.linspace(0, 65535, 64 * 64).reshape(64, 64).astype(np.uint16)
    data = _encode(Image.fromarray(ramp), "PNG")
    assert Image.open(io.BytesIO(data)).mode.startswith("I")
    arr = np.asarray(load_image(data))
    assert arr.shape == (64, 64, 3)
    assert arr[0, 0, 0] == 0 and arr[-1, -1, 0] == 255
    assert abs(int(arr[32, 0, 0]) - 128) <= 2  # the middle of the ramp stays mid-grey
    assert 100 < arr.mean() < 155  # clipping would make it almost all white


def test_sixteen_bit_rgb_png():
    arr16 = np.zeros((16, 16, 3), np.uint16)
    arr16[..., 0] = 65535
    arr16[..., 1] = 32768
    out = np.asarray(load_image(_png_rgb16(arr16)))
    assert out.shape == (16, 16, 3)
    assert tuple(out[0, 0]) in ((255, 128, 0), (255, 127, 0))


def test_sixteen_bit_array_input():
    arr = np.full((20, 20), 65535, np.uint16)
    assert np.asarray(load_image(arr)).min() == 255


def test_rgba_is_composited_on_white():
    im = Image.new("RGBA", (20, 20), (0, 0, 255, 255))
    im.paste((0, 0, 0, 0), (0, 0, 10, 20))  # left half fully transparent
    arr = np.asarray(load_image(_encode(im, "PNG")))
    assert tuple(arr[5, 2]) == (255, 255, 255)
    assert tuple(arr[5, 15]) == (0, 0, 255)
    half = Image.new("RGBA", (20, 20), (0, 0, 0, 128))
    assert abs(int(np.asarray(load_image(half))[0, 0, 0]) - 127) <= 1


def test_la_and_palette_with_transparency():
    la = Image.new("LA", (20, 20), (0, 0))
    assert np.asarray(load_image(_encode(la, "PNG"))).min() == 255
    pal = Image.new("P", (20, 20), 0)
    pal.putpalette([10, 200, 30] + [0, 0, 0] * 255)
    assert tuple(np.asarray(load_image(_encode(pal, "PNG")))[0, 0]) == (10, 200, 30)
    pal.info["transparency"] = 0
    assert tuple(np.asarray(load_image(_encode(pal, "PNG", transparency=0)))[0, 0]) == (255, 255, 255)


def test_cmyk_and_grayscale_jpeg():
    cmyk = Image.new("CMYK", (32, 32), (0, 255, 255, 0))  # red in CMYK
    r, g, b = np.asarray(load_image(_encode(cmyk, "JPEG"))).reshape(-1, 3).mean(0)
    assert r > 200 and g < 60 and b < 60
    gray = Image.new("L", (32, 32), 77)
    assert np.allclose(np.asarray(load_image(_encode(gray, "JPEG"))), 77, atol=2)


def test_gif_with_300_frames_uses_the_first():
    frames = [Image.new("RGB", (64, 48), (255, 0, 0))]
    for i in range(1, 300):
        f = Image.new("RGB", (64, 48), (0, 0, 255))
        f.putpixel((i % 64, i // 64), (255, 255, 255))  # every frame differs (no merging)
        frames.append(f)
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:], duration=20, loop=0)
    assert Image.open(io.BytesIO(buf.getvalue())).n_frames == 300
    arr = np.asarray(load_image(buf.getvalue()))
    assert arr.shape == (48, 64, 3)
    assert tuple(arr[0, 0]) == (255, 0, 0)


def test_exif_orientation_is_applied():
    im = Image.new("RGB", (40, 20), (0, 0, 0))
    im.paste((255, 255, 255), (0, 0, 20, 20))  # left half white
    exif = Image.Exif()
    exif[0x0112] = 6  # "rotate 90 CW to display"
    out = load_image(_encode(im, "JPEG", exif=exif.tobytes(), quality=95))
    assert out.size == (20, 40)
    arr = np.asarray(out).mean(axis=2)
    assert arr[5, 10] > 200 and arr[35, 10] < 50  # white ended up on top


def test_bogus_exif_orientation_is_ignored():
    exif = Image.Exif()
    exif[0x0112] = 99
    out = load_image(_encode(_solid((40, 20)), "JPEG", exif=exif.tobytes()))
    assert out.size == (40, 20)


def test_large_images_are_downsized():
    big = Image.new("RGB", (3000, 1500), RED)
    for fmt in ("JPEG", "PNG"):
        out = load_image(_encode(big, fmt))
        assert max(out.size) == MAX_SIDE and abs(out.size[0] / out.size[1] - 2.0) < 0.01


def test_pil_and_array_inputs():
    assert load_image(_solid(mode="RGBA", color=(1, 2, 3, 255))).mode == "RGB"
    assert load_image(np.zeros((16, 16, 3), np.uint8)).size == (16, 16)
    with pytest.raises(ImageError, match="uint8/uint16"):
        load_image(np.zeros((16, 16, 3), np.float32))
    with pytest.raises(ImageError, match="only"):
        load_image(np.zeros((2, 2, 3), np.uint8))
    with pytest.raises(ImageError, match="floating-point"):
        load_image(Image.new("F", (16, 16)))


def test_bundled_examples_load():
    from explainzoo.demo.app import example_images

    paths = example_images()
    assert len(paths) == 4
    for p in paths:
        im = load_image(p)
        assert im.mode == "RGB" and min(im.size) >= 256
    credits = Path(paths[0]).parent / "CREDITS"
    assert "CC0" in credits.read_text() and "public domain" in credits.read_text()


# -- draft-mode JPEG decoding, a configurable pixel cap, reduce before converting (issue 11.11) ----


def _photo(size=(4000, 3000)) -> Image.Image:
    rng = np.random.default_rng(0)
    small = (rng.random((size[1] // 100, size[0] // 100, 3)) * 255).astype(np.uint8)
    return Image.fromarray(small).resize(size, Image.Resampling.BILINEAR)


def test_jpeg_is_decoded_in_draft_mode_at_the_side_the_backbone_needs(monkeypatch):
    data = _encode(_photo(), "JPEG", quality=85)
    from PIL import JpegImagePlugin

    drafts = []
    real_draft = JpegImagePlugin.JpegImageFile.draft

    def spy(self, mode, size):
        drafts.append(size)
        return real_draft(self, mode, size)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "draft", spy)
    full = load_image(data)
    small = load_image(data, target_side=256)
    assert drafts[:2] == [(MAX_SIDE, MAX_SIDE), (256, 256)]
    assert max(full.size) == MAX_SIDE
    assert min(small.size) >= 256 and max(small.size) == 500  # the 1/8 scale of 4000x3000
    # the same picture: the drafted decode, downsized, matches the full one downsized
    a = np.asarray(small.resize((200, 150)), dtype=float)
    b = np.asarray(full.resize((200, 150)), dtype=float)
    assert np.abs(a - b).mean() < 4.0


def test_a_lower_pixel_cap_refuses_before_decoding():
    data = _png_header_only(4000, 3000)  # 12 MP claimed, stub pixel data: only the header is read
    with pytest.raises(ImageError, match=r"12.0 MP\); the limit is 2.0 MP"):
        load_image(data, max_pixels=2_000_000)
    with pytest.raises(ImageError, match="limit is 2.0 MP"):
        load_image(_solid((2000, 1500)), max_pixels=2_000_000)
    with pytest.raises(ImageError, match="max_pixels must be an int"):
        load_image(_encode(_solid(), "PNG"), max_pixels=0)
    # the cap cannot be raised above the module's
    big = _png_header_only(8000, 6000)
    with pytest.raises(ImageError, match="limit is 40.0 MP"):
        load_image(big, max_pixels=10**9)


def test_large_png_is_reduced_before_mode_conversion_and_keeps_its_colours():
    rgba = Image.new("RGBA", (3000, 2000), (*RED, 255))
    rgba.paste((0, 0, 255, 0), (1500, 0, 3000, 2000))  # right half: transparent blue
    im = load_image(_encode(rgba, "PNG"))
    assert im.size == (1024, 683)
    arr = np.asarray(im)
    assert tuple(arr[300, 200]) == RED
    assert tuple(arr[300, 900]) == (255, 255, 255)  # composited on white, no blue bleeding in
    assert arr[300, 505:519].min() >= 0 and tuple(arr[300, 530]) == (255, 255, 255)
    pal = Image.new("P", (2600, 2600), 0)
    pal.putpalette([*RED, 0, 200, 0])
    pal.paste(1, (1300, 0, 2600, 2600))
    arr = np.asarray(load_image(_encode(pal, "PNG")))
    assert tuple(arr[10, 10]) == RED and tuple(arr[10, -10]) == (0, 200, 0)
    gray16 = Image.fromarray(np.full((2100, 2500), 32768, dtype=np.uint16))
    arr = np.asarray(load_image(_encode(gray16, "PNG")))
    assert arr.shape[:2] == (860, 1024) and np.all(arr == 128)

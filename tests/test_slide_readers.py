"""Slide readers (trainer/slides/reader.py): real slides, the TIFF layouts scanners write, and files they refuse.

The layouts are written here with tifffile: levels as pages or SubIFDs, Aperio's order (base, thumbnail, levels,
label, macro), JPEG (YCbCr and RGB), JPEG 2000 and Aperio's J2K tiles, the MPP in the description or the
resolution tags. Each is read back with every reader that reads it and compared with the pixels written.
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer.slides import reader
from trainer.slides.reader import OpenSlideReader, SlideError, TiffReader, open_slide

TILE = 256
H, W = 768, 1024  # level 0 of the written slides
DOWNSAMPLES = (1, 2, 8)  # steps of 2 then 4: tifffile alone would not join them into one pyramid
JPEG_TOLERANCE = 2.0  # mean absolute difference of lossy tiles from the pixels written, or of two decoders


def _image(h: int = H, w: int = W) -> np.ndarray:
    """Smooth colour with blobs, like stained tissue on glass: JPEG keeps it within a few levels."""
    y, x = np.mgrid[0:h, 0:w] / max(h, w)
    blobs = np.sin(x * 23) * np.cos(y * 17)
    rgb = np.stack([200 + 40 * blobs, 120 + 60 * x + 30 * blobs, 170 + 50 * y - 20 * blobs], -1)
    return np.clip(rgb, 0, 255).astype(np.uint8)


def _levels(level0: np.ndarray, downsamples=DOWNSAMPLES) -> list[np.ndarray]:
    out = []
    for ds in downsamples:
        h, w = level0.shape[0] // ds, level0.shape[1] // ds
        box = level0[: h * ds, : w * ds].reshape(h, ds, w, ds, 3).astype(np.float32).mean(axis=(1, 3))
        out.append((box + 0.5).astype(np.uint8))
    return out


def _j2k_tiles(pixels: np.ndarray):
    """Aperio's JPEG 2000 tiles: a bare J2K codestream per tile, edge tiles padded to full size."""
    import imagecodecs

    for y in range(0, pixels.shape[0], TILE):
        for x in range(0, pixels.shape[1], TILE):
            block = np.full((TILE, TILE, 3), 255, np.uint8)
            part = pixels[y : y + TILE, x : x + TILE]
            block[: part.shape[0], : part.shape[1]] = part
            yield imagecodecs.jpeg2k_encode(block, level=90, codecformat="J2K")


CODECS = {
    "jpeg-ycbcr": {"compression": "jpeg"},  # tifffile's default: YCbCr, 2x2 chroma subsampling, as scanners store
    "jpeg-rgb": {"compression": "jpeg", "compressionargs": {"outcolorspace": "RGB"}},
    "jpeg2000": {"compression": "jpeg2000"},
    "zlib": {"compression": "zlib"},
}


def _write_tiled(tif, pixels: np.ndarray, codec: str, **kw) -> None:
    if codec == "aperio-j2k":
        kw.update(compression=33005)  # APERIO_JP2000_RGB, as TCGA's slides
        tif.write(_j2k_tiles(pixels), shape=pixels.shape, dtype=np.uint8, tile=(TILE, TILE), **kw)
    else:
        tif.write(pixels, tile=(TILE, TILE), **CODECS[codec], **kw)


def _write_slide(path, layout: str, codec: str, mpp_in: str | None, mpp: float = 0.25) -> list[np.ndarray]:
    """A pyramid of _image() in `layout` (pages, subifds, aperio), with associated images beside it; its levels.

    mpp_in: where the MPP is written: "description" (Aperio's "|MPP = x"), "CENTIMETER", "INCH" or None.
    """
    import tifffile

    levels = _levels(_image())
    common = {"photometric": "rgb", "metadata": None}
    res = {}
    if mpp_in in ("CENTIMETER", "INCH"):
        per_unit = (1e4 if mpp_in == "CENTIMETER" else 25400.0) / mpp
        res = {"resolution": (per_unit, per_unit), "resolutionunit": mpp_in}
    aperio = "Aperio Image Library v12.0.5\r\n"
    desc = f"{aperio}{W}x{H} [0,0 {W}x{H}] ({TILE}x{TILE}) J2K/KDU Q=70|AppMag = 40"
    if mpp_in == "description":
        desc += f"|MPP = {mpp}"
    thumb = _levels(levels[0], (16,))[0]  # the pyramid's shape, but in strips: not a level
    label = _image(40, 60)  # another shape altogether
    with tifffile.TiffWriter(path) as tif:
        if layout == "pages":
            for n, pixels in enumerate(levels):
                _write_tiled(tif, pixels, codec, subfiletype=1 if n else 0, **common, **(res if n == 0 else {}))
            tif.write(thumb, subfiletype=1, compression="jpeg", **common)
            tif.write(label, subfiletype=1, compression="lzw", **common)
        elif layout == "subifds":
            _write_tiled(tif, levels[0], codec, subifds=len(levels) - 1, **common, **res)
            for pixels in levels[1:]:
                _write_tiled(tif, pixels, codec, subfiletype=1, **common)
            tif.write(thumb, subfiletype=1, compression="jpeg", **common)
        elif layout == "aperio":
            _write_tiled(tif, levels[0], codec, description=desc, **common)
            tif.write(thumb, description=f"{aperio}{W}x{H} -> 128x96 - ", compression="jpeg", **common)
            for pixels in levels[1:]:
                h, w = pixels.shape[:2]
                _write_tiled(tif, pixels, codec, description=f"{aperio}{W}x{H} -> {w}x{h}", **common)
            tif.write(label, subfiletype=1, description=f"{aperio}label 60x40", compression="lzw", **common)
            tif.write(_image(50, 120), subfiletype=9, description=f"{aperio}macro 120x50", compression="jpeg", **common)
    return levels


def _diff(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.abs(a.astype(np.int16) - b.astype(np.int16)).mean())


# layout, codec, where the MPP is, the MPP read, levels OpenSlide reads (0: it refuses the file)
LAYOUTS = [
    ("pages", "jpeg-ycbcr", "CENTIMETER", 0.25, 3),
    ("pages", "jpeg-rgb", "INCH", 0.25, 3),
    ("pages", "zlib", None, None, 3),
    ("pages", "jpeg2000", "CENTIMETER", 0.25, 0),  # OpenSlide decodes no TIFF JPEG 2000 but Aperio's
    ("subifds", "jpeg-ycbcr", "CENTIMETER", 0.25, 1),  # OpenSlide's generic TIFF ignores SubIFDs: level 0 only
    ("aperio", "jpeg-ycbcr", "description", 0.25, 3),
    ("aperio", "aperio-j2k", "description", 0.25, 3),
]


@pytest.mark.parametrize("layout,codec,mpp_in,mpp,openslide_levels", LAYOUTS, ids=lambda v: str(v))
def test_scanner_layouts_read_back(tmp_path, layout, codec, mpp_in, mpp, openslide_levels):
    path = tmp_path / f"{layout}-{codec}.tif"
    levels = _write_slide(path, layout, codec, mpp_in)
    tolerance = 0.0 if codec == "zlib" else JPEG_TOLERANCE
    for name in reader.READERS:
        if name == "openslide" and not openslide_levels:
            with pytest.raises(SlideError, match=path.name):
                open_slide(str(path), name)
            continue
        slide = open_slide(str(path), name)
        try:
            by_openslide = isinstance(slide, OpenSlideReader)
            assert by_openslide == (name == "openslide" or (name == "auto" and openslide_levels > 0)), name
            count = openslide_levels if by_openslide else len(levels)
            assert slide.level_dimensions == [(a.shape[1], a.shape[0]) for a in levels[:count]], name
            assert slide.level_downsamples == pytest.approx(DOWNSAMPLES[:count]), name
            assert slide.mpp == (None if mpp is None else pytest.approx(mpp)), name
            for n, want in enumerate(levels[:count]):
                got = slide.read(n, 0, 0, want.shape[1], want.shape[0])
                assert _diff(got, want) <= tolerance, (name, n, _diff(got, want))
            # A region across tiles and past the edge: white outside, like glass.
            got = slide.read(0, W - 300, H - 100, 400, 200)
            assert _diff(got[:100, :300], levels[0][-100:, -300:]) <= tolerance + 0.5, name
            assert (got[100:] == 255).all() and (got[:, 300:] == 255).all(), name
        finally:
            slide.close()


def _tile_of(level0, ds, y, x, h, w):
    return _levels(level0[y * ds : (y + h) * ds, x * ds : (x + w) * ds], (ds,))[0]


def test_uneven_pyramid_keeps_every_level(tmp_path):
    """write_pyramid's (1, 4, 32): both readers see three levels (tifffile's own series would stop at two)."""
    from trainer.slides import pyramid

    level0 = _image(1024, 1536)
    path = tmp_path / "uneven.tif"
    pyramid.write_pyramid(
        path, level0.shape[:2], 0.5, (1, 4, 32), lambda ds, y, x, h, w: _tile_of(level0, ds, y, x, h, w)
    )
    want = _levels(level0, (1, 4, 32))
    for name in ("openslide", "tifffile"):
        slide = open_slide(str(path), name)
        assert slide.level_dimensions == [(a.shape[1], a.shape[0]) for a in want], name
        assert slide.mpp == pytest.approx(0.5)
        for n, a in enumerate(want):
            assert _diff(slide.read(n, 0, 0, a.shape[1], a.shape[0]), a) == 0, (name, n)
        slide.close()


def test_plain_planar_and_rgba_tiffs(tmp_path):
    """Strips are read whole (exact); separate planes too; alpha is composited on white by both readers."""
    import tifffile

    pixels = _image(300, 500)
    plain, planar, rgba = tmp_path / "plain.tif", tmp_path / "planar.tif", tmp_path / "rgba.tif"
    tifffile.imwrite(plain, pixels, photometric="rgb", rowsperstrip=7, compression="lzw", metadata=None)
    tifffile.imwrite(planar, np.moveaxis(pixels, -1, 0), photometric="rgb", planarconfig="separate", metadata=None)
    alpha = np.tile(np.linspace(0, 255, 500).astype(np.uint8), (300, 1))
    tifffile.imwrite(
        rgba, np.dstack([pixels, alpha]), photometric="rgb", extrasamples=["unassalpha"], tile=(64, 64), metadata=None
    )
    for path in (plain, planar):
        slide = open_slide(str(path))
        assert isinstance(slide, TiffReader) and slide.level_dimensions == [(500, 300)] and slide.mpp is None
        np.testing.assert_array_equal(slide.read(0, 0, 0, 500, 300), pixels)
        np.testing.assert_array_equal(slide.read(0, 123, 45, 67, 89), pixels[45:134, 123:190])
    a = alpha[..., None] / 255.0
    on_white = (pixels * a + 255.0 * (1 - a) + 0.5).astype(np.uint8)
    for name in ("openslide", "tifffile"):
        got = open_slide(str(rgba), name).read(0, 0, 0, 500, 300)
        assert np.abs(got.astype(int) - on_white).max() <= 1, name


def test_photo_resolution_is_no_mpp(tmp_path):
    """72 dpi, what image editors write, would be 353 um/px: no microscope's, so the slide records no MPP."""
    import tifffile

    path = tmp_path / "photo.tif"
    tifffile.imwrite(
        path, _image(256, 256), photometric="rgb", tile=(64, 64), resolution=(72, 72), resolutionunit="INCH"
    )
    for name in ("openslide", "tifffile"):
        assert open_slide(str(path), name).mpp is None, name


def test_too_large_to_read_whole_is_refused(tmp_path, monkeypatch):
    import tifffile

    path = tmp_path / "big.tif"
    tifffile.imwrite(path, _image(300, 500), photometric="rgb", metadata=None)
    monkeypatch.setattr(reader, "WHOLE_LEVEL_MAX_BYTES", 300 * 500 * 3 - 1)
    with pytest.raises(SlideError, match=r"big\.tif: level 0 \(500x300\) has no tiles and is .* GiB decoded") as e:
        open_slide(str(path))
    assert "\n" not in str(e.value)
    monkeypatch.setattr(reader, "WHOLE_LEVEL_MAX_BYTES", 300 * 500 * 3)
    open_slide(str(path)).close()


def _refused(path, reader_name, match):
    with pytest.raises(SlideError, match=match) as e:
        open_slide(str(path), reader_name)
    message = str(e.value)
    assert message.startswith(f"{path}: ") and "\n" not in message, message
    return message


def test_truncated_tiff_is_refused_by_every_reader(tmp_path):
    import tifffile

    from trainer.slides import pyramid

    noise = np.random.default_rng(0).integers(0, 256, (1024, 1024, 3), np.uint8)  # Deflate cannot shrink it
    good = tmp_path / "good.tif"
    pyramid.write_pyramid(good, noise.shape[:2], 0.5, (1, 4, 16), lambda ds, y, x, h, w: noise[:h, :w])
    data = good.read_bytes()
    with tifffile.TiffFile(good) as tif:
        last_ifd = tif.pages[-1].offset
    half, no_last, short = tmp_path / "half.tif", tmp_path / "no-last-level.tif", tmp_path / "short.tif"
    half.write_bytes(data[: len(data) // 2])
    no_last.write_bytes(data[:last_ifd])  # the first levels are whole, but the chain of images is cut
    short.write_bytes(data[:-100])  # every image is listed, but the last tile ends past the file
    for path in (half, no_last, short):
        for name in reader.READERS:
            _refused(path, name, path.name)
        assert "truncated" in _refused(path, "tifffile", path.name)
    _refused(short, "tifffile", "level 2's pixels end at byte")


def test_not_a_slide_is_refused_by_every_reader(tmp_path):
    notes = tmp_path / "notes.svs"
    notes.write_text("not a slide\n")
    for name in reader.READERS:
        _refused(notes, name, "notes.svs: not a slide")
    with pytest.raises(SlideError, match="missing.svs' is not a file"):
        open_slide(str(tmp_path / "missing.svs"))
    with pytest.raises(SlideError, match="--reader='pil'"):
        open_slide(str(notes), "pil")


def test_greyscale_and_other_pixel_formats_are_refused(tmp_path):
    import tifffile

    grey = _image(300, 500)[..., 1]
    strips, tiles = tmp_path / "grey.tif", tmp_path / "grey-tiled.tif"
    tifffile.imwrite(strips, grey, photometric="minisblack", metadata=None)
    tifffile.imwrite(tiles, grey, photometric="minisblack", tile=(64, 64), metadata=None)
    for name in reader.READERS:
        _refused(tiles, name, r"level 0 is greyscale \(PhotometricInterpretation MINISBLACK\)")
        if name != "openslide":  # OpenSlide reads no untiled TIFF at all
            _refused(strips, name, "level 0 is greyscale")
    # OpenSlide converts these to 8-bit RGB itself; tifffile's reader refuses them, saying why.
    rgb = _image(128, 128)
    others = {
        "rgb16.tif": (dict(data=rgb.astype(np.uint16) * 257, photometric="rgb"), "16 bits"),
        "palette.tif": (dict(data=rgb[..., 0], photometric="palette"), "palette"),
        "ycbcr.tif": (dict(data=rgb, photometric="ycbcr"), "YCbCr without JPEG compression"),
    }
    for file_name, (kw, why) in others.items():
        tifffile.imwrite(tmp_path / file_name, tile=(64, 64), metadata=None, **kw)
        _refused(tmp_path / file_name, "tifffile", why)


REAL_SLIDES = {  # name: (level_dimensions, mpp, the reader "auto" takes)
    "CMU-1-Small-Region.svs": ([(2220, 2967)], 0.499, OpenSlideReader),
    "TCGA-CR-7395-01A-01-TS1.svs": ([(4443, 3567), (2221, 1783)], None, OpenSlideReader),
    "kidney-48-5.tif": ([(1493, 901)], None, TiffReader),
}


def _real_slide(shared_data, name):
    path = shared_data / "slides" / name
    if not path.is_file():
        pytest.skip(f"{path} is not a file")
    return path


@pytest.mark.shared_data
@pytest.mark.parametrize("name", sorted(REAL_SLIDES))
def test_real_slides_open_with_the_default_reader(shared_data, name):
    path = _real_slide(shared_data, name)
    dimensions, mpp, chosen = REAL_SLIDES[name]
    slide = open_slide(str(path))
    assert isinstance(slide, chosen)
    assert slide.level_dimensions == dimensions
    assert slide.mpp == (None if mpp is None else pytest.approx(mpp))
    slide.close()


@pytest.mark.shared_data
@pytest.mark.parametrize("name", ["CMU-1-Small-Region.svs", "TCGA-CR-7395-01A-01-TS1.svs"])
def test_real_slides_read_alike_with_openslide_and_tifffile(shared_data, name):
    """Aperio JPEG and JPEG 2000 tiles through two decoders agree; tifffile skips the thumbnail, label and macro."""
    path = str(_real_slide(shared_data, name))
    a, b = open_slide(path, "openslide"), open_slide(path, "tifffile")
    assert b.level_dimensions == a.level_dimensions == REAL_SLIDES[name][0]
    assert b.level_downsamples == pytest.approx(a.level_downsamples) and b.mpp == a.mpp
    w, h = a.level_dimensions[0]
    region = (w // 3, h // 3, 700, 500)
    assert _diff(a.read(0, *region), b.read(0, *region)) < JPEG_TOLERANCE
    # Coarser levels at the origin: elsewhere OpenSlide resamples a non-integer downsample (TCGA's 2.0005)
    # by a fraction of a pixel, which is no decoder's difference.
    for level in range(1, len(a.level_dimensions)):
        assert _diff(a.read(level, 0, 0, 512, 512), b.read(level, 0, 0, 512, 512)) < JPEG_TOLERANCE, level
    a.close()
    b.close()


@pytest.mark.shared_data
def test_real_plain_tiff_is_read_whole(shared_data):
    from PIL import Image

    path = _real_slide(shared_data, "kidney-48-5.tif")
    _refused(path, "openslide", "not a slide format OpenSlide reads")
    slide = open_slide(str(path), "tifffile")
    with Image.open(path) as image:
        np.testing.assert_array_equal(slide.read(0, 0, 0, 1493, 901), np.asarray(image.convert("RGB")))
    slide.close()


def test_readers_are_the_command_choices():
    assert reader.DEFAULT_READER == "auto" and set(reader.READERS) == {"auto", "openslide", "tifffile"}

"""A tiled pyramidal TIFF writer: the heatmap output's format, and the test and benchmark slides'."""

from __future__ import annotations

import numpy as np


def write_pyramid(
    path, shape: tuple[int, int], mpp: float | None, downsamples, tile_fn, tile: int = 256, compression="zlib"
) -> None:
    """A tiled, Deflate-compressed pyramidal TIFF that OpenSlide (generic-tiff) and tifffile read.

    shape: level 0's (height, width); downsamples: integers, 1 first; tile_fn(downsample, y, x, h, w) -> uint8
    (h, w, 3) gives the pixels of a level tile by tile, so a slide far larger than memory can be written
    (bench/bench_slide.py). mpp None writes no resolution; compression None writes raw tiles (fast, large).
    """
    import tifffile

    height, width = shape
    with tifffile.TiffWriter(str(path), bigtiff=height * width * 3 > 2**31) as tif:
        for n, ds in enumerate(downsamples):
            h, w = height // ds, width // ds

            def tiles(ds=ds, h=h, w=w):
                for y in range(0, h, tile):
                    for x in range(0, w, tile):
                        block = np.full((tile, tile, 3), 255, np.uint8)
                        th, tw = min(tile, h - y), min(tile, w - x)
                        block[:th, :tw] = tile_fn(ds, y, x, th, tw)
                        yield block

            extra = {} if mpp is None else {"resolution": (1e4 / (mpp * ds),) * 2, "resolutionunit": "CENTIMETER"}
            tif.write(
                tiles(),
                shape=(h, w, 3),
                dtype=np.uint8,
                tile=(tile, tile),
                photometric="rgb",
                compression=compression,
                compressionargs={"level": 1} if compression == "zlib" else None,
                subfiletype=0 if n == 0 else 1,
                **extra,
            )

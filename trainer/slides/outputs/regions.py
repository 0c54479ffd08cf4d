"""regions.geojson: the tumour regions as GeoJSON polygons in level-0 pixels, holes included (QuPath imports them).

A window stands for its label square (stride x stride model pixels around its centre); a region is the exact
union of the squares of windows at or above the threshold that share an edge (shapely), so two regions that
touch only at a corner are two features, and tissue left out inside a region is a hole.
"""

from __future__ import annotations

import json

import numpy as np

NAME = "regions.geojson"


def region_polygons(above: np.ndarray, grid) -> list:
    """shapely Polygons of the regions of `above` (rows, cols), exteriors counter-clockwise, top to bottom."""
    import shapely
    from shapely.geometry.polygon import orient

    x0, y0 = grid.origin_level0
    s = grid.stride_level0
    boxes = []
    for r in np.flatnonzero(above.any(axis=1)):
        row = np.concatenate([[False], above[r], [False]])
        edges = np.flatnonzero(row[1:] != row[:-1])  # starts and ends of the runs of True cells
        for c0, c1 in zip(edges[::2], edges[1::2]):
            boxes.append(shapely.box(x0 + (c0 - 0.5) * s, y0 + (r - 0.5) * s, x0 + (c1 - 0.5) * s, y0 + (r + 0.5) * s))
    if not boxes:
        return []
    union = shapely.unary_union(boxes)
    parts = getattr(union, "geoms", [union])
    polygons = [orient(shapely.simplify(p, 0), sign=1.0) for p in parts if not p.is_empty]
    return sorted(polygons, key=lambda p: (p.bounds[1], p.bounds[0]))


def geojson(polygons, threshold: float) -> dict:
    """A FeatureCollection of the polygons, classified Tumor (QuPath's GeoJSON import reads objectType and
    classification)."""
    import shapely.geometry

    features = [
        {
            "type": "Feature",
            "geometry": shapely.geometry.mapping(polygon),
            "properties": {
                "objectType": "annotation",
                "classification": {"name": "Tumor", "color": [200, 0, 0]},
                "threshold": threshold,
            },
        }
        for polygon in polygons
    ]
    return {"type": "FeatureCollection", "features": features}


def write(result, out) -> dict:
    from pcam_tfds.core.folder_lock import atomic_write_text

    polygons = region_polygons(result.above, result.plan.grid)
    atomic_write_text(out / NAME, json.dumps(geojson(polygons, result.plan.threshold)) + "\n")
    return {"regions": len(polygons)}

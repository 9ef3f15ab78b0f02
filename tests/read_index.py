"""Reads an acf-index index with pyarrow and shapely (not acf-index's own code) and prints
JSON for the Rust tests: the live part files' `geo` metadata and, per chip, its window,
footprint ring, bbox, valid fraction and feature statistics."""
import glob
import json
import math
import os
import sys

import numpy as np
import pyarrow.parquet as pq
import shapely.wkb

index = sys.argv[1]
live = []
for path in sorted(glob.glob(os.path.join(index, "scenes", "*.json"))):
    record = json.load(open(path))
    if record["status"] == "ok" and record.get("part"):
        live.append(os.path.join(index, record["part"]))

files, rows = [], []
for part in live:
    meta = pq.read_schema(part).metadata
    geo = json.loads(meta[b"geo"])
    table = pq.read_table(part)
    nodes_field = table.schema.field("nodes")
    dtype = nodes_field.metadata[b"acf_index:dtype"].decode()
    shape = tuple(int(x) for x in nodes_field.metadata[b"acf_index:shape"].decode().split(","))
    files.append({"part": os.path.basename(part), "geo": geo, "rows": table.num_rows,
                  "nodes_type": str(nodes_field.type), "nodes_dtype": dtype, "nodes_shape": shape})
    for r in table.to_pylist():
        ring, geom_type = None, None
        if r["geometry"] is not None:
            poly = shapely.wkb.loads(r["geometry"])
            assert poly.geom_type in ("Polygon", "MultiPolygon") and poly.is_valid, r["chip_id"]
            # A footprint across the antimeridian is a MultiPolygon of its two sides.
            parts = [poly] if poly.geom_type == "Polygon" else list(poly.geoms)
            ring = [list(c) for c in parts[0].exterior.coords]
            geom_type = poly.geom_type
        nodes = np.frombuffer(r["nodes"], dtype=dtype).reshape(shape).astype(np.float64)
        rows.append({
            "chip_id": r["chip_id"], "scene": r["scene"], "crs": r["crs"],
            "window": [r["col"], r["row"], r["width"], r["height"]], "padded": r["padded"], "geom_type": geom_type,
            "valid_fraction": r["valid_fraction"], "bbox": r["bbox"], "ring": ring,
            "acquired": None if r["acquired"] is None else r["acquired"].isoformat(),
            "global_norm": math.sqrt(sum(x * x for x in r["global"])),
            "global_head": r["global"][:8],
            "nodes_len": int(nodes.size),
            "node0_norm": float(np.sqrt((nodes[0] ** 2).sum())),
        })
json.dump({"files": files, "rows": rows}, sys.stdout)

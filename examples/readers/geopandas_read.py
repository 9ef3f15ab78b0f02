"""Read an acf-index catalog as a GeoDataFrame (GeoParquet 1.1, CRS84 footprints).

    python examples/readers/geopandas_read.py INDEX_DIR
"""
import sys

import geopandas as gpd

index = sys.argv[1] if len(sys.argv) > 1 else "index"
chips = gpd.read_parquet(f"{index}/parts", columns=["chip_id", "scene", "valid_fraction", "geometry"])
print(chips.crs, len(chips), "chips")
print(chips.head(3))
chips.to_file("chips.geojson", driver="GeoJSON")  # footprints for QGIS / geojson.io
print("wrote chips.geojson")

"""Read the non-geometry columns of an acf-index catalog with Polars (pip install polars).

    python examples/readers/polars_read.py INDEX_DIR
"""
import sys

import polars as pl

index = sys.argv[1] if len(sys.argv) > 1 else "index"
chips = pl.scan_parquet(f"{index}/parts/*.parquet").select(
    "chip_id", "scene", "col", "row", "valid_fraction", pl.col("bbox").struct.field("xmin"), "global"
)
print(chips.filter(pl.col("valid_fraction") > 0.9).head(5).collect())

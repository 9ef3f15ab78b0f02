"""Read an acf-index catalog with pyarrow: only the columns you need, any filter.

    python examples/readers/pyarrow_read.py INDEX_DIR
"""
import sys

import pyarrow.compute as pc
import pyarrow.dataset as ds

index = sys.argv[1] if len(sys.argv) > 1 else "index"
chips = ds.dataset(f"{index}/parts", format="parquet")
table = chips.to_table(columns=["chip_id", "scene", "col", "row", "bbox", "global"],
                       filter=pc.field("valid_fraction") >= 0.9)
print(table.num_rows, "chips with >= 90 % valid pixels")
print(table.slice(0, 3).to_pandas()[["chip_id", "scene", "col", "row"]])
vector = table.column("global")[0].values.to_numpy()  # 512 float32, unit norm
print("global vector of the first chip:", vector[:4], "... norm", float((vector ** 2).sum()) ** 0.5)

"""Search beyond one machine: stage 1 in DuckDB, stage 2 by acf-index.

Stage 1 is a dot product over the `global` column, which DuckDB (or Spark, DataFusion) runs
over any number of part files, local or on object storage (`s3://bucket/index/parts/*.parquet`
with DuckDB's httpfs). `acf-index embed` gives the query's vector; `acf-index rerank` ranks the
kept chip ids by the full ACF score S (attention correction and filtering), like `query`.

    python examples/readers/duckdb_two_stage.py INDEX_DIR "tennis court near football field" [N] [K]
"""
import json
import os
import subprocess
import sys
import tempfile

import duckdb

index, text = sys.argv[1], sys.argv[2]
n = int(sys.argv[3]) if len(sys.argv) > 3 else 1000   # stage-1 candidates
k = int(sys.argv[4]) if len(sys.argv) > 4 else 10     # results
acf = os.environ.get("ACF_INDEX_BIN", "acf-index")

vector = subprocess.run([acf, "-q", "embed", "--format", "sql", text], check=True, capture_output=True,
                        text=True).stdout.strip()
# Parquet has no fixed-size list type: DuckDB reads `global` as FLOAT[]; cast for the array functions.
candidates = duckdb.sql(f"""
    SELECT chip_id FROM read_parquet('{index}/parts/*.parquet')
    ORDER BY array_inner_product(global::FLOAT[512], {vector}) DESC LIMIT {n}
""").fetchall()
with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as f:
    f.write("\n".join(c[0] for c in candidates) + "\n")
hits = subprocess.run([acf, "-q", "rerank", text, "--index", index, "--chips", f.name, "--top-k", str(k),
                       "--format", "json"], check=True, capture_output=True, text=True).stdout
os.unlink(f.name)
for line in hits.splitlines():
    h = json.loads(line)
    print(f'{h["rank"]:>3}  {h["score"]:.4f}  {h["chip_id"]}  {os.path.basename(h["scene"])}')

"""Query an acf-index catalog with DuckDB.

Plain SQL over the Parquet files needs nothing else. Geometry functions need DuckDB's
`spatial` extension, which DuckDB downloads once (`INSTALL spatial`): machines without
internet access can still filter on the `bbox` covering column, as below.

    python examples/readers/duckdb_read.py INDEX_DIR
"""
import sys

import duckdb

index = sys.argv[1] if len(sys.argv) > 1 else "index"
parts = f"{index}/parts/*.parquet"
print(duckdb.sql(f"""
    SELECT scene, count(*) AS chips, round(avg(valid_fraction), 3) AS valid
    FROM read_parquet('{parts}') GROUP BY scene ORDER BY chips DESC
""").fetchall())
# Chips whose footprint bbox intersects a lon/lat box (uses row-group statistics).
print(duckdb.sql(f"""
    SELECT chip_id, bbox.xmin, bbox.ymin FROM read_parquet('{parts}')
    WHERE bbox.xmax >= -106.1 AND bbox.xmin <= -106.0 AND bbox.ymax >= 40.5 AND bbox.ymin <= 40.7
""").fetchall())
# Stage 1 of a search in SQL: the chips whose `global` vector is closest to a query vector
# (here the first chip's own, i.e. "more like this"). Parquet has no fixed-size list type, so
# DuckDB reads `global` as FLOAT[] (a list): cast it to FLOAT[512] for the array functions.
print(duckdb.sql(f"""
    WITH q AS (SELECT global::FLOAT[512] AS v FROM read_parquet('{parts}') ORDER BY chip_id LIMIT 1)
    SELECT chip_id, round(array_inner_product(global::FLOAT[512], q.v), 4) AS sim_g
    FROM read_parquet('{parts}'), q ORDER BY sim_g DESC LIMIT 3
""").fetchall())
try:
    duckdb.sql("LOAD spatial")
    print(duckdb.sql(f"SELECT chip_id, ST_Area(geometry) FROM read_parquet('{parts}') LIMIT 3").fetchall())
except duckdb.Error as err:
    print("spatial extension not available here (INSTALL spatial needs internet):", str(err).splitlines()[0])

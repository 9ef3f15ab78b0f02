#!/usr/bin/env bash
# The main job on data in the repository, as a newcomer's first run: set up what is missing
# (scripts/setup.sh), index a folder of real GeoTIFF scenes (the test fixtures plus a mosaic
# of UC Merced test images georeferenced with GDAL's command-line tools), show what the index
# holds, ask it three questions, write an HTML page of the hits, and read the same Parquet
# with DuckDB: chips per scene and stage 1 of the mission query in SQL.
#
#   scripts/run-examples.sh            # output under target/example/
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
bin=target/release/acf-index
work=target/example
scenes=$work/scenes
rm -rf "$work"
mkdir -p "$scenes" "$work/tiles"

# Real scenes: NAIP, Landsat 8, NEON and other GeoTIFFs of the test fixtures.
for f in tests/fixtures/geotiff/{RGB.byte.tif,naip-4band-150x200.tif,rmnp-rgb.tif,cogeo.tif,OSBS_029.tif}; do
    cp "$f" "$scenes/"
done
# A 6×5 mosaic of UC Merced test images (0.3 m, tiles of 224 px), placed side by side in UTM
# 17N with gdal_translate -a_ullr and merged by gdalbuildvrt: a scene whose contents we know.
classes=(tenniscourt baseballdiamond airplane harbor beach forest)
for r in 0 1 2 3 4; do
    for c in 0 1 2 3 4 5; do
        class=${classes[$(( (c + r) % 6 ))]}
        x0=$(awk -v c="$c" 'BEGIN { printf "%.1f", 500000 + c * 224 * 0.3 }')
        y0=$(awk -v r="$r" 'BEGIN { printf "%.1f", 3300000 - r * 224 * 0.3 }')
        x1=$(awk -v x="$x0" 'BEGIN { printf "%.1f", x + 224 * 0.3 }')
        y1=$(awk -v y="$y0" 'BEGIN { printf "%.1f", y - 224 * 0.3 }')
        gdal_translate -q -of GTiff -outsize 224 224 -a_srs EPSG:32617 -a_ullr "$x0" "$y0" "$x1" "$y1" \
            "tests/fixtures/ucm-mosaic/$class$((91 + r)).jpg" "$work/tiles/$r-$c.tif"
    done
done
gdalbuildvrt -q "$work/tiles/mosaic.vrt" "$work/tiles"/*.tif
gdal_translate -q -co COMPRESS=DEFLATE "$work/tiles/mosaic.vrt" "$scenes/ucm-mosaic.tif"

echo "== acf-index index $scenes --out $work/index"
"$bin" index --device cpu "$scenes" --out "$work/index"
echo
echo "== acf-index info $work/index"
"$bin" info "$work/index"
for q in "tennis court near football field" "boats in a harbor" "airplanes parked at an airport"; do
    echo
    echo "== acf-index query \"$q\" --top-k 5"
    "$bin" -q query --device cpu --index "$work/index" --top-k 5 "$q"
done
"$bin" -q query --device cpu --index "$work/index" --top-k 12 --html "$work/results.html" \
    "tennis court near football field" >/dev/null
echo
echo "wrote $work/results.html (the hits of the mission query with thumbnails)"

echo
echo "== DuckDB over $work/index/parts/*.parquet"
"$bin" -q embed --format sql "tennis court near football field" > "$work/query.sql"
.venv/bin/python - "$work" <<'EOF'
import sys
import duckdb
work = sys.argv[1]
parts = f"{work}/index/parts/*.parquet"
query = open(f"{work}/query.sql").read().strip()
print("chips per scene:")
for scene, chips in duckdb.sql(f"""
        SELECT regexp_extract(scene, '[^/]+$') AS scene, count(*) AS chips
        FROM read_parquet('{parts}') GROUP BY 1 ORDER BY chips DESC""").fetchall():
    print(f"  {chips:4d}  {scene}")
print("top 5 by sim_g for 'tennis court near football field' (stage 1 in SQL):")
for chip, scene, col, row, sim in duckdb.sql(f"""
        SELECT chip_id, regexp_extract(scene, '[^/]+$'), col, row,
               round(array_inner_product(global::FLOAT[512], {query}), 4) AS sim_g
        FROM read_parquet('{parts}') ORDER BY sim_g DESC LIMIT 5""").fetchall():
    print(f"  {sim:.4f}  {scene} window ({col}, {row})")
EOF

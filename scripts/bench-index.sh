#!/usr/bin/env bash
# Benchmark of `acf-index index` (README, "Indexing benchmark"): end-to-end chips/s and peak
# RSS next to the encoder alone, on the real Landsat 8 scene (2041x1860, UInt16) and on
# scenes of 5490x5490 and 10980x10980 (a Sentinel-2 tile; UInt16, tiled, DEFLATE) that GDAL
# builds from it.
# Run on an otherwise idle machine; extra arguments go to `acf-index bench index`.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${ACF_BIN:-target/release/acf-index}
L8=${ACF_L8_SCENE:-../shared/data/geotiff/LC08_L1TP_224078_20200518_20200518_01_RT.TIF}
WORK=${ACF_BENCH_DIR:-target/bench-index}
mkdir -p "$WORK"
for size in 5490 10980; do
    scene="$WORK/s2like-$size.tif"
    if [ ! -f "$scene" ]; then
        echo "[bench] building $scene from $L8 with gdal_translate" >&2
        gdal_translate -q -outsize "$size" "$size" -r bilinear -co TILED=YES -co COMPRESS=DEFLATE \
            -co PREDICTOR=2 -co BIGTIFF=IF_SAFER "$L8" "$scene.tmp.tif"
        mv "$scene.tmp.tif" "$scene"
    fi
done
lscpu | grep -E '^Model name|^CPU\(s\)' >&2 || true
for scene in "$L8" "$WORK/s2like-5490.tif" "$WORK/s2like-10980.tif"; do
    "$BIN" bench index "$scene" "$@"
done

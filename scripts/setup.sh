#!/usr/bin/env bash
# Installs whatever is missing for building acf-index on Debian 12, then builds it.
# Idempotent: quick when everything is already there.
#   - Debian packages: libgdal-dev (GDAL 3.6), gdal-bin (used by tests), pkg-config, a C/C++ compiler,
#     wordnet-base (WordNet 3.0: how queries' unknown words are read)
#   - .venv with PyPI torch==2.11.0 (libtorch for tch 0.24; the CUDA 13 build), linked as .venv/libtorch,
#     plus pyarrow, shapely, geopandas and duckdb (tests read indexes with them; examples/ uses them)
#   - cargo build (release unless ACF_SETUP_PROFILE=debug)
set -euo pipefail
cd "$(dirname "$0")/.."

TORCH_VERSION=2.11.0
say() { printf '[setup] %s\n' "$*" >&2; }

# --- Debian packages ---------------------------------------------------------
missing=()
command -v gdal-config >/dev/null 2>&1 || missing+=(libgdal-dev)
command -v gdal_translate >/dev/null 2>&1 || missing+=(gdal-bin)
command -v pkg-config >/dev/null 2>&1 || missing+=(pkg-config)
command -v g++ >/dev/null 2>&1 || missing+=(g++)
python3 -c 'import venv, ensurepip' >/dev/null 2>&1 || missing+=(python3-venv)
[ -f /usr/share/wordnet/index.noun ] || missing+=(wordnet-base)   # unknown query words (README)
command -v chromium >/dev/null 2>&1 || missing+=(chromium)        # the search page's browser test
command -v chromedriver >/dev/null 2>&1 || missing+=(chromium-driver)
SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
apt_install() { DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq "$@" >/dev/null; }
if ((${#missing[@]})); then
    say "installing Debian packages: ${missing[*]}"
    $SUDO apt-get update -qq
    apt_install "${missing[@]}"
fi
# Optional: jemalloc for CPU training (README, "Training and evaluation"); training works
# without it, only slower, so a failure here is a warning, not an error.
if ! dpkg -s libjemalloc2 >/dev/null 2>&1; then
    say "installing libjemalloc2 (optional: faster CPU training)"
    apt_install libjemalloc2 2>/dev/null ||
        { $SUDO apt-get update -qq 2>/dev/null && apt_install libjemalloc2 2>/dev/null; } ||
        say "could not install libjemalloc2: CPU training works without it, slower"
fi

# --- Rust toolchain ----------------------------------------------------------
if ! command -v cargo >/dev/null 2>&1; then
    say "cargo not found: install Rust with rustup (https://rustup.rs), then rerun"; exit 1
fi

# --- libtorch from PyPI, in a project-local venv ------------------------------
if ! .venv/bin/python -c "import torch, sys; sys.exit(0 if torch.__version__.split('+')[0] == '$TORCH_VERSION' else 1)" >/dev/null 2>&1; then
    say "installing torch==$TORCH_VERSION into .venv (about 70 s and 4.6 GB)"
    python3 -m venv .venv
    .venv/bin/pip install -q --disable-pip-version-check "torch==$TORCH_VERSION"
fi
if ! .venv/bin/python -c "import pyarrow, shapely, geopandas, duckdb, polars, moto, boto3, PIL, safetensors" >/dev/null 2>&1 \
    || [ ! -x .venv/bin/geoparquet-validator ] || [ ! -x .venv/bin/moto_server ]; then
    say "installing pyarrow, shapely, geopandas, duckdb, polars, geoparquet-validator, moto[server], pillow, safetensors into .venv (readers, checks, the local S3 server used by tests and examples, scripts/gpu_pack_data.py and scripts/average-weights.py)"
    .venv/bin/pip install -q --disable-pip-version-check pyarrow shapely geopandas duckdb polars \
        geoparquet-validator "moto[server]" boto3 pillow safetensors
fi
torch_dir=$(.venv/bin/python -c 'import os, torch; print(os.path.dirname(torch.__file__))')
[ "$(readlink .venv/libtorch 2>/dev/null || true)" = "$torch_dir" ] || ln -sfn "$torch_dir" .venv/libtorch

# --- Build -------------------------------------------------------------------
if [ "${ACF_SETUP_PROFILE:-release}" = "release" ]; then
    say "cargo build --release"
    cargo build --release --quiet
fi
say "ready"

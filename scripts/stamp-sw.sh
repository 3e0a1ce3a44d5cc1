#!/bin/sh
# Trunk's post_build hook (Trunk.toml): writes into the staged sw.js the list of files
# trunk built and a digest of their bytes. The digest names the service worker's
# cache, so every build that changes a file installs a new cache and drops the old one.
set -eu
dir="${TRUNK_STAGING_DIR:?run by trunk}"
cd "$dir"
files=$(find . -type f ! -name sw.js | sed 's|^\./||' | LC_ALL=C sort)
build=$(printf '%s\n' "$files" | xargs cat | sha256sum | cut -c1-16)
list=$(printf '%s\n' "$files" | sed "s/.*/'&'/" | paste -sd, - | sed 's/,/, /g')
sed -i -e "s|^const BUILD = .*|const BUILD = '$build';|" -e "s|^const FILES = .*|const FILES = [$list];|" sw.js

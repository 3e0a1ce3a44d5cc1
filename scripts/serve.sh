#!/usr/bin/env bash
# Builds ClassTune and serves it with the default model and the sample course:
#   bash scripts/serve.sh            (then open the printed URL in Chrome)
# Environment: PORT (default 8080), HOST (default 127.0.0.1), CLASSTUNE_CACHE.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/setup.sh"

classtune_setup system rust model app

HOST=${HOST:-127.0.0.1}
PORT=${PORT:-8080}
cd "$CLASSTUNE_ROOT/dist"
echo
echo "ClassTune is served at: http://$HOST:$PORT/"
echo "  (open it in Chrome or Edge 113+; default model at /models/$(basename "$MODEL_FILE"); Ctrl-C stops)"
echo
exec python3 -m http.server "$PORT" --bind "$HOST" --directory "$CLASSTUNE_ROOT/dist"

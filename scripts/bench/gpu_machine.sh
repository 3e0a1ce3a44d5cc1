#!/usr/bin/env bash
# The checks and benchmarks for a lent GPU machine (docs/benchmarks.md, "A real GPU").
# That machine has no Rust and no network and takes 64 MiB of files, so this machine
# prepares what it runs, in folders git ignores (add them to .git/info/exclude):
#   bash scripts/bench/gpu_machine.sh prepare     # here
#   bash scripts/bench/gpu_machine.sh             # there, carrying .bench .gl .whl
#   PARTS="train peft" bash scripts/bench/gpu_machine.sh   # some parts only
# .bench/bin.tar.xz holds stripped release binaries: the GPU test binaries, the engine
# and train benches, the classtune CLI and the burn peer (when built);
# .bench/smollm2.head is SmolLM2's GGUF header (scripts/bench/synth_model.py), whose
# weights are filled in at random there, which changes no timing; .gl/ holds the Vulkan
# loader .debs and .whl/ the gguf wheel transformers needs to read a GGUF.
# Each part has its own time limit, so one that hangs leaves the others' results.
# Logs go to $OUT (the device tool brings them back).
set -uo pipefail
if [ "${1:-}" = prepare ]; then
    set -e
    tests=(gpu_runtime kernels_attention kernels_attention_backward kernels_cross_entropy kernels_lora
        kernels_matmul kernels_matmul_grad kernels_sample kernels_swiglu model train train_peft)
    rm -rf .bench && mkdir -p .bench/bin .gl .whl
    exe() { jq -r 'select(.executable != null) | .executable' | grep /deps/; }
    for t in "${tests[@]}"; do
        cp "$(cargo test --release --no-run --test "$t" --message-format=json 2>/dev/null | exe)" ".bench/bin/test_$t"
    done
    for b in engine train; do
        cp "$(cargo bench --no-run --bench "$b" --message-format=json 2>/dev/null | exe)" ".bench/bin/bench_$b"
    done
    cargo build --release --bin classtune && cp target/release/classtune .bench/bin/
    peer=benches/burn-peer/target/release/burn-peer
    [ -x "$peer" ] && cp "$peer" .bench/bin/
    strip .bench/bin/*
    (cd .bench && tar cf - bin | xz -T0 -6 >bin.tar.xz && rm -r bin)
    model=${CLASSTUNE_MODEL:-$HOME/.cache/classtune/SmolLM2-135M-Instruct.Q4_1.gguf}
    python3 scripts/bench/synth_model.py head "$model" .bench/smollm2.head >.bench/smollm2.size
    o='-oAPT::Architecture=amd64 -oAPT::Architectures=amd64 -oDir::State::Lists=/tmp/amd64'
    mkdir -p /tmp/amd64/partial && apt-get $o update >/dev/null
    (cd .gl && apt-get $o download libvulkan1 libegl1 libglvnd0 libopengl0 libgl1 libglx0 libgles2)
    python3 -m pip download -q --no-deps --only-binary=:all: -d .whl gguf==0.19.0
    du -sh .bench .gl .whl
    exit 0
fi
OUT=${OUT:-/tmp/gpu-out}
mkdir -p "$OUT"
for f in .gl/*.deb; do dpkg -x "$f" /; done
ldconfig
icd=/usr/local/nvidia/share/vulkan/icd.d/nvidia_icd.json
[ -f "$icd" ] && export VK_DRIVER_FILES=$icd
python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site .whl/*.whl
export PYTHONPATH=/tmp/site XDG_RUNTIME_DIR=/tmp
# The test binaries find fixtures/ at the path they were built in.
mkdir -p /work && ln -sfn "$PWD" /work/main
tar xJf .bench/bin.tar.xz -C /tmp
python3 scripts/bench/synth_model.py fill .bench/smollm2.head "$(cat .bench/smollm2.size)" /tmp/smollm2.gguf
export CLASSTUNE_MODEL=/tmp/smollm2.gguf
nvidia-smi -L

# PARTS picks what runs, in this order (default: all); each part has its own limit.
PARTS=${PARTS:-"train peft profile tests burn engine"}
part() { [[ " $PARTS " == *" $1 "* ]]; }
# Ours first: a pass per sequence (TRAIN_PASS=256) and the batch packed into one pass
# (1024), kept and recomputed. From /tmp, where the bench finds no PyTorch CPU peer
# script: on this machine that peer is not the yardstick, PyTorch on CUDA is.
if part train; then
    echo "== train (ours)"
    (cd /tmp && for cfg in "256 0" "1024 0" "1024 1"; do
        set -- $cfg
        TRAIN_PASS=$1 TRAIN_RECOMPUTE=$2 TRAIN_STEPS=10 BURN_PEER=none timeout 60 /tmp/bin/bench_train 2>&1
    done) | tee "$OUT/train.log"
fi
if part peft; then
    echo "== PyTorch + PEFT on CUDA (fp32), same configuration"
    timeout 90 python3 scripts/bench/peft_train.py --model /tmp/smollm2.gguf --device cuda --steps 10 2>&1 | tail -1 | tee "$OUT/peft_cuda.log"
fi
if part profile; then
    echo "== one packed step, kernel by kernel"
    (cd /tmp && TRAIN_PASS=1024 TRAIN_STEPS=1 TRAIN_PROFILE=1 BURN_PEER=none timeout 60 /tmp/bin/bench_train 2>&1) | tee "$OUT/train_profile.log"
fi
if part tests; then
    echo "== tests (tiny models and fixtures; the real SmolLM2 cannot travel)"
    for t in /tmp/bin/test_*; do
        echo "-- ${t##*/}"
        timeout 40 "$t" --skip smollm2 >/tmp/test.log 2>&1
        echo "exit $?"
        cat /tmp/test.log >>"$OUT/tests_full.log"
        grep -E "^test result|FAILED|panicked" /tmp/test.log | head -20
    done 2>&1 | tee "$OUT/tests.log"
fi
if part burn && [ -x /tmp/bin/burn-peer ]; then
    echo "== burn + burn-wgpu, same configuration (its first step autotunes)"
    TRAIN_SEQ=256 TRAIN_BATCH=4 TRAIN_STEPS=10 timeout 150 /tmp/bin/burn-peer 2>&1 | tail -1 | tee "$OUT/burn.log"
fi
if part engine; then
    echo "== engine"
    timeout 60 /tmp/bin/bench_engine 2>&1 | tee "$OUT/engine.log"
fi

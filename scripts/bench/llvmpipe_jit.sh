#!/usr/bin/env bash
# Disassembles the machine code llvmpipe (lavapipe) compiled for the kernel a running
# process is executing: the only way to see what a WGSL change became on this CPU
# (Mesa's own dumps need a debug build). Start a bench that spends seconds in one
# kernel, then:
#   scripts/bench/llvmpipe_jit.sh PID [OUT.asm]
# It attaches gdb until a thread runs JIT code (no symbol), copies that mapping and
# disassembles it; count instructions with
#   awk -F'\t' 'NF>=3 {split($3,a," "); print a[1]}' OUT.asm | sort | uniq -c | sort -rn
set -euo pipefail
pid=${1:?usage: llvmpipe_jit.sh PID [OUT.asm]}
out=${2:-/tmp/llvmpipe_jit.asm}
bin=$(mktemp)
cat > "$bin.py" <<PY
import gdb
done = False
for th in gdb.selected_inferior().threads():
    th.switch()
    pc = int(gdb.parse_and_eval("\$pc"))
    if done or "No symbol" not in gdb.execute("info symbol %d" % pc, to_string=True):
        continue
    for line in gdb.execute("info proc mappings", to_string=True).splitlines():
        f = line.split()
        if len(f) >= 2 and f[0].startswith("0x") and int(f[0], 16) <= pc < int(f[1], 16):
            gdb.execute("dump binary memory $bin %s %s" % (f[0], f[1]))
            print("JIT %s-%s pc %x" % (f[0], f[1], pc))
            done = True
gdb.execute("detach")
PY
for _ in $(seq 1 30); do
    kill -0 "$pid" 2>/dev/null || { echo "process $pid is gone" >&2; exit 1; }
    report=$(gdb -batch -p "$pid" -x "$bin.py" 2>/dev/null | grep '^JIT' || true)
    if [ -n "$report" ]; then
        base=$(echo "$report" | awk '{split($2, r, "-"); print r[1]}')
        objdump -D -b binary -mi386:x86-64 --adjust-vma="$base" "$bin" > "$out"
        echo "$report -> $out ($(grep -c . "$out") lines)"
        rm -f "$bin" "$bin.py"
        exit 0
    fi
    sleep 1
done
rm -f "$bin" "$bin.py"
echo "no thread ran JIT code in 30 tries" >&2
exit 1

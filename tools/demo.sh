#!/usr/bin/env bash
# The main job on the embedded default: start `mover serve` with its
# per-user defaults (data dir, socket, file:// store), back up a 1 GiB file
# through shared memory with `mover put`, restore it with `mover get`,
# compare the bytes, and time `cp` + `sync` of the same file on the same
# disk as the baseline. Usage: tools/demo.sh [SIZE_MIB]
set -euo pipefail
cd "$(dirname "$0")/.."
bin=target/release
[ -x "$bin/mover" ] || { echo "run: cargo build --release" >&2; exit 2; }
mib=${1:-1024}
work=$(mktemp -d "${TMPDIR:-/tmp}/shmover-demo.XXXXXX")
data_dir=$work/data
export MOVER_SOCKET=$data_dir/run/mover.sock
cleanup() { [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null; wait 2>/dev/null; rm -rf "$work"; }
trap cleanup EXIT

"$bin/mover" serve --data-dir "$data_dir" 2>"$work/mover.log" &
pid=$!
for _ in $(seq 1 500); do [ -S "$MOVER_SOCKET" ] && break; sleep 0.02; done
[ -S "$MOVER_SOCKET" ] || { cat "$work/mover.log"; exit 1; }

head -c $((mib << 20)) /dev/urandom > "$work/in.bin"
now() { date +%s.%N; }
rate() { awk -v b=$((mib << 20)) -v s="$1" 'BEGIN { printf "%.3f", b / s / 1e9 }'; }

sync; t0=$(now); "$bin/mover" put -q "$work/in.bin" demo/file; t1=$(now)
"$bin/mover" ls demo/
t2=$(now); "$bin/mover" get -q demo/file "$work/out.bin"; t3=$(now)
cmp "$work/in.bin" "$work/out.bin"
"$bin/mover" verify -q demo/file
t4=$(now); cp "$work/in.bin" "$work/cp.bin"; sync; t5=$(now)

put_s=$(awk -v a="$t0" -v b="$t1" 'BEGIN{print b-a}')
get_s=$(awk -v a="$t2" -v b="$t3" 'BEGIN{print b-a}')
cp_s=$(awk -v a="$t4" -v b="$t5" 'BEGIN{print b-a}')
echo "round trip of ${mib} MiB byte-identical"
echo "{\"put_gbps\":$(rate "$put_s"),\"get_gbps\":$(rate "$get_s"),\"cp_sync_gbps\":$(rate "$cp_s")}"

#!/usr/bin/env bash
# Runs inside a virtme-ng guest booted by `cargo xtask kernels` (see
# xtask/src/kernels/): the checks listed in OUT/plan.tsv, one after the
# other, each under a time limit, against the guest's kernel.
#
# The guest sees the host's root filesystem read-only (same binaries, same
# Apache, same prebuilt test executables); /tmp, /var, /etc... are overlays
# thrown away at exit. Only OUT, shared with --rwdir, survives: this script
# writes OUT/guest.txt (kernel, what it set up), OUT/results.tsv (one line
# per check: name, exit status, seconds) and OUT/logs/NAME.log.
#
# plan.tsv: one check per line, tab-separated: NAME, LIMIT (seconds), then
# the command and its arguments (no empty fields).
set -u
out=${1:?usage: run-matrix.sh OUT}
mkdir -p "$out/logs"
: >"$out/results.tsv"
info="$out/guest.txt"
echo "kernel: $(uname -r)" >"$info"

# What a booted Debian has and virtme-ng's init may not set up. Each is a
# no-op when already there, and each is reported in guest.txt.
#  - tracefs: Flowdar mounts it itself, but bpftrace (the tests' witness)
#    and the tests' leftover-uprobe check read /sys/kernel/tracing.
if [ ! -d /sys/kernel/tracing/events ]; then
    mount -t tracefs nodev /sys/kernel/tracing && echo "mounted tracefs" >>"$info"
fi
#  - debugfs: older tools look for tracing under /sys/kernel/debug/tracing.
if ! mountpoint -q /sys/kernel/debug; then
    mount -t debugfs nodev /sys/kernel/debug && echo "mounted debugfs" >>"$info"
fi
#  - bpffs: Flowdar never pins, and the lifecycle test checks that nothing
#    of ours is pinned under /sys/fs/bpf: give it a real bpffs to look at.
if ! mountpoint -q /sys/fs/bpf; then
    mount -t bpf bpf /sys/fs/bpf && echo "mounted bpffs" >>"$info"
fi
#  - loopback: every throwaway Apache listens on 127.0.0.1.
if ! ip -br link show lo | grep -q UP; then
    ip link set lo up && echo "brought lo up" >>"$info"
fi
#  - a writable working directory: the root (and so the host's cwd) is
#    read-only, and `flowdar demo` writes its trace to the current
#    directory by default.
work=/tmp/flowdar-guest
mkdir -p "$work" && cd "$work" || exit 1
export TMPDIR=/tmp HOME=$work
# Memory-locked limits: kernels before 5.11 charged BPF maps to RLIMIT_MEMLOCK.
ulimit -l unlimited 2>/dev/null

while IFS=$'\t' read -r -a f; do
    [ "${#f[@]}" -ge 3 ] || continue
    name=${f[0]} limit=${f[1]}
    echo "[$(uname -r)] $name ..."
    start=$(date +%s.%N)
    timeout --kill-after=10 "$limit" "${f[@]:2}" >"$out/logs/$name.log" 2>&1 </dev/null
    rc=$?
    secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
    [ "$rc" -eq 124 ] && echo "timed out after $limit s" >>"$out/logs/$name.log"
    printf '%s\t%s\t%s\n' "$name" "$rc" "$secs" >>"$out/results.tsv"
    echo "[$(uname -r)] $name: $([ "$rc" -eq 0 ] && echo ok || echo "FAILED ($rc)") in $secs s"
done <"$out/plan.tsv"
echo done >>"$info"

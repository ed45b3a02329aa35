#!/usr/bin/env bash
# Runs every performance measurement of issue 7 and prints the figures for
# docs/BENCHMARKS.md. Loopback only; takes about 9 minutes on 2 cores.
#
#   bench/run-all.sh            # everything
#   QUICK=1 bench/run-all.sh    # smaller runs (a smoke check of the scripts)
#
# Absolute rates drift on a shared machine: quote the same-run ratios.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ -n "${QUICK:-}" ]; then
  export DRAIN_DATAGRAMS=50000 DRAIN_ROUNDS=1 DRAIN_HOSTS=100000 MEMORY_HOSTS=100000
  live=(--hosts 20000 --interval 1 --timeout 3 --stop-count 50 --stop-after 3 --window 5)
  scan=100000
else
  live=()
  scan=1000000
fi

echo "== machine"
echo "nproc: $(nproc); cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2- | sed 's/^ //')"
echo "load average: $(cut -d' ' -f1-3 /proc/loadavg)"
echo

cargo build --release --quiet
echo "== ingest drain (raw recvmmsg vs lubdub ingest vs seed Python)"
cargo bench --quiet --bench ingest_drain 2>&1 | grep -v '^\s*$'
echo
echo "== memory per host (counting allocator)"
cargo bench --quiet --bench memory
echo
echo "== seed: extractSilent over a ${scan}-entry dict, and the dict's own size"
python3 bench/seed_server.py --scan "$scan"
python3 bench/seed_server.py --memory "$scan"
echo
echo "== live server under loadgen (CPU, RSS, HTTP, detection, client)"
python3 bench/live.py --bin target/release/lubdub "${live[@]}"
echo
echo "== client footprint (lubdub client beside the seed's client, 10 s beat)"
if [ -n "${QUICK:-}" ]; then
  python3 bench/client_rss.py --seconds 15 --instances 1
else
  python3 bench/client_rss.py
fi
echo
echo "== per-beat path and detector (criterion; full output in target/criterion)"
cargo bench --quiet --bench beat_path 2>&1 | grep -E '^(beat|detector)/|time:' | grep -v '%' || true

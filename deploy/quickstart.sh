#!/usr/bin/env bash
# dagproxy end to end on one machine: installs what is missing, builds, then starts a local
# redis-server, the embedded dev chain, the proxy and the demo miner, and prints the shares and
# blocks arriving in Redis every few seconds. Ctrl-C stops all of it.
#
# Environment: QUICKSTART_SECONDS=N stops by itself after N seconds (exit 1 if no share reached
# Redis); ports: QS_REDIS_PORT, QS_NODE_PORT, QS_STRATUM_PORT, QS_HTTP_PORT.
set -euo pipefail
cd "$(dirname "$0")/.."

redis_port=${QS_REDIS_PORT:-6390}
node_port=${QS_NODE_PORT:-18545}
stratum_port=${QS_STRATUM_PORT:-18008}
http_port=${QS_HTTP_PORT:-18888}
login=0xb85150eb365e7df0941f0cf08235f987ba91506a
work=.quickstart
mkdir -p "$work"

need=()
command -v redis-server >/dev/null 2>&1 || need+=(redis-server)
command -v redis-cli >/dev/null 2>&1 || need+=(redis-tools)
ldconfig -p 2>/dev/null | grep -q 'libOpenCL.so ' || need+=(ocl-icd-opencl-dev)
[ -e /etc/OpenCL/vendors/pocl.icd ] || need+=(pocl-opencl-icd)
command -v cc >/dev/null 2>&1 || need+=(build-essential)
command -v curl >/dev/null 2>&1 || need+=(curl ca-certificates)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "== installing: ${need[*]}"
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi
if ! command -v cargo >/dev/null 2>&1; then
  [ -x "$HOME/.cargo/bin/cargo" ] || curl -sSf https://sh.rustup.rs | sh -s -- -y --profile minimal
  export PATH="$HOME/.cargo/bin:$PATH"
fi

echo "== building (release)"
cargo build --release --locked
bin=target/release/dagproxy

pids=()
cleanup() {
  trap - INT TERM EXIT
  echo; echo "== stopping"
  # The proxy first: SIGTERM drains in-flight shares to Redis.
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no \
  >"$work/redis.log" 2>&1 &
pids+=($!)
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done

# Dev chain: test-mode DAG (32 KiB), a block every ~10 s of one CPU thread, or every 30 s.
"$bin" devnet --listen "127.0.0.1:$node_port" --chain test --difficulty 3000000 \
  --block-time 30 >"$work/devnet.log" 2>&1 &
pids+=($!)
sleep 0.5

"$bin" proxy --chain test --verifier auto --upstream "http://127.0.0.1:$node_port" \
  --redis "redis://127.0.0.1:$redis_port/0" --stratum "127.0.0.1:$stratum_port" \
  --http "127.0.0.1:$http_port" --difficulty 100000 >"$work/proxy.log" 2>&1 &
proxy=$!
pids=("$proxy" "${pids[@]}")
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$stratum_port") 2>/dev/null && break
  sleep 0.1
done

"$bin" mine --stratum "127.0.0.1:$stratum_port" --login "$login" --worker demo --threads 1 \
  >"$work/miner.log" 2>&1 &
pids=("${pids[@]}" $!)

echo "== running: redis :$redis_port, dev chain :$node_port, stratum :$stratum_port, http :$http_port"
echo "   logs in $work/; Ctrl-C stops everything"
r() { redis-cli -p "$redis_port" "$@"; }
start=$(date +%s)
while :; do
  sleep 5
  round=$(r hget eth:stats roundShares); round=${round:-0}
  shares=$(r zcard eth:hashrate)
  blocks=$(r zcard eth:blocks:candidates)
  height=$(r hget eth:nodes main:height)
  echo "$(date +%T) height=${height:-?} hashrate-shares=$shares roundShares=$round blocks:candidates=$blocks"
  if [ -n "${QUICKSTART_SECONDS:-}" ] && [ $(( $(date +%s) - start )) -ge "$QUICKSTART_SECONDS" ]; then
    [ "$shares" -gt 0 ] || { echo "no share reached Redis" >&2; tail -5 "$work"/*.log >&2; exit 1; }
    exit 0
  fi
done

#!/usr/bin/env bash
# The load goal of the production-readiness issue, on one machine: a local redis-server, the
# embedded dev chain, the release proxy with the CPU verifier over the full DAG, then
# `dagproxy loadgen` for LT_SECONDS at LT_RATE shares/s over LT_CONNECTIONS connections.
# Prints loadgen's JSON report (accepted_per_s, p50_ms, p99_ms, acknowledged, found_in_redis,
# lost), after a line on stderr with the proxy's own share latency from its /metrics.
# Environment: LT_RATE (20000), LT_SECONDS (60), LT_CONNECTIONS (200), LT_INVALID (0),
# LT_VERIFIER (cpu), LT_BIN (another dagproxy binary, for A/B runs; default: the release
# build), LT_DIALECT (ethproxy | ethereumstratum (alias nicehash) | mixed: every other
# connection EthereumStratum/1.0.0), LT_REDIS_PORT, LT_NODE_PORT, LT_STRATUM_PORT,
# LT_METRICS_PORT, LT_REPLICAS (0: that many Redis replicas of the one written to, on the next
# ports), LT_WAIT_REPLICAS (0: the proxy's [redis] waitReplicas; needs as many replicas) and
# LT_WAIT_TIMEOUT (100ms: its waitTimeout), LT_REDIS_NICE and LT_PROXY_NICE (unset: normal priority; e.g. -10 and -5
# let the system under test go before the load generator sharing its CPUs, as remote miners
# would), LT_NICEHASH_PORT (unset: EthereumStratum/1.0.0 miners use the main Stratum port,
# where the proxy detects them from their first message; set: the proxy also listens there
# and ethereumstratum runs use it), LT_DIFFICULTY (2: the share bank of precomputed valid
# shares fills fast; the proxy still runs one full hashimoto per share).
set -euo pipefail
cd "$(dirname "$0")/.."

rate=${LT_RATE:-20000}
seconds=${LT_SECONDS:-60}
conns=${LT_CONNECTIONS:-200}
invalid=${LT_INVALID:-0}
verifier=${LT_VERIFIER:-cpu}
dialect=${LT_DIALECT:-ethproxy}
redis_port=${LT_REDIS_PORT:-6391}
node_port=${LT_NODE_PORT:-18546}
stratum_port=${LT_STRATUM_PORT:-18009}
metrics_port=${LT_METRICS_PORT:-19090}
nicehash_port=${LT_NICEHASH_PORT:-}
case $dialect in
  ethproxy | ethereumstratum | mixed) ;;
  nicehash) dialect=ethereumstratum ;;
  *) echo "LT_DIALECT must be ethproxy, ethereumstratum (nicehash) or mixed" >&2; exit 2 ;;
esac
work=.loadtest
mkdir -p "$work"

bin=${LT_BIN:-target/release/dagproxy}
if [ -z "${LT_BIN:-}" ]; then
  [ -x "$bin" ] && [ -z "${LT_REBUILD:-}" ] || cargo build --release --locked
fi

pids=()
cleanup() {
  trap - INT TERM EXIT
  for p in "${pids[@]}"; do kill -TERM "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup INT TERM EXIT

redis-server --port "$redis_port" --bind 127.0.0.1 --save '' --appendonly no --dir "$work" \
  >"$work/redis.log" 2>&1 &
pids+=($!)
# Redis is one thread serving every proxy: under CPU contention its run-queue waits become
# every share's latency. LT_REDIS_NICE (e.g. -5, needs root) raises its priority.
[ -n "${LT_REDIS_NICE:-}" ] && renice -n "$LT_REDIS_NICE" -p "$!" >/dev/null
for _ in $(seq 50); do redis-cli -p "$redis_port" ping >/dev/null 2>&1 && break; sleep 0.1; done
redis-cli -p "$redis_port" flushall >/dev/null
replicas=${LT_REPLICAS:-0}
wait_replicas=${LT_WAIT_REPLICAS:-0}
if [ "$wait_replicas" -gt "$replicas" ]; then
  echo "LT_WAIT_REPLICAS=$wait_replicas needs LT_REPLICAS of at least that" >&2
  exit 2
fi
for i in $(seq "$replicas"); do
  rport=$((redis_port + i))
  # Its own directory: a replica keeps the RDB of its initial sync on disk.
  mkdir -p "$work/replica$i"
  redis-server --port "$rport" --bind 127.0.0.1 --save '' --appendonly no \
    --dir "$work/replica$i" --replicaof 127.0.0.1 "$redis_port" >"$work/replica$i.log" 2>&1 &
  pids+=($!)
  [ -n "${LT_REDIS_NICE:-}" ] && renice -n "$LT_REDIS_NICE" -p "$!" >/dev/null
done
if [ "$replicas" -gt 0 ]; then
  up=0
  for _ in $(seq 100); do
    up=$(redis-cli -p "$redis_port" info replication | grep -c 'state=online' || true)
    [ "$up" -ge "$replicas" ] && break
    sleep 0.1
  done
  [ "$up" -ge "$replicas" ] || { echo "replicas did not come online" >&2; exit 1; }
fi
# Settings without a command-line flag go in a config file; the flags below override the rest.
cat >"$work/proxy.toml" <<EOF
[redis]
waitReplicas = $wait_replicas
waitTimeout = "${LT_WAIT_TIMEOUT:-100ms}"
EOF

# No new heights during the run (block-time 0, difficulty far above what the shares reach),
# so every valid share stays valid.
"$bin" devnet --listen "127.0.0.1:$node_port" --chain test --difficulty 0xffffffffffffffff \
  --block-time 0 >"$work/devnet.log" 2>&1 &
pids+=($!)
sleep 0.3

nicehash_listen=off
[ -n "$nicehash_port" ] && nicehash_listen=127.0.0.1:$nicehash_port
RUST_LOG=${RUST_LOG:-warn} "$bin" proxy -c "$work/proxy.toml" --chain test \
  --verifier "$verifier" --upstream "http://127.0.0.1:$node_port" \
  --redis "redis://127.0.0.1:$redis_port/0" --stratum "127.0.0.1:$stratum_port" \
  --stratum-nicehash "$nicehash_listen" --http off --metrics "127.0.0.1:$metrics_port" \
  --difficulty "${LT_DIFFICULTY:-2}" >"$work/proxy.log" 2>&1 &
proxy=$!
pids=("$proxy" "${pids[@]}")
[ -n "${LT_PROXY_NICE:-}" ] && renice -n "$LT_PROXY_NICE" -p "$proxy" >/dev/null
port=$stratum_port
[ "$dialect" = ethereumstratum ] && [ -n "$nicehash_port" ] && port=$nicehash_port
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
  sleep 0.1
done

report=$("$bin" loadgen --stratum "127.0.0.1:$port" --redis "redis://127.0.0.1:$redis_port/0" \
  --connections "$conns" --seconds "$seconds" --rate "$rate" --invalid "$invalid" \
  --dialect "$dialect" --json)

# The proxy's own view (dagproxy_share_seconds: parsed submission to verdict, without the
# network and the generator's scheduling), on stderr so the JSON report stays the last line.
# (The group keeps 2>/dev/null from applying to the rest of the script, as a bare exec would.)
if { exec 3<>"/dev/tcp/127.0.0.1/$metrics_port"; } 2>/dev/null; then
  printf 'GET /metrics HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
  awk '/^dagproxy_share_seconds_bucket/ {
         le = $1; sub(/.*le="/, "", le); sub(/".*/, "", le); n++; les[n] = le; cum[n] = $2 }
       /^dagproxy_share_seconds_count/ { total = $2 }
       END {
         if (total == 0) exit
         printf "proxy share latency (dagproxy_share_seconds, %d shares):", total
         for (i = 1; i <= n; i++) {
           v = les[i] + 0
           if (les[i] != "+Inf" && v >= 0.005 && v <= 0.1)
             printf " <=%gms %.2f%%", v * 1000, 100 * cum[i] / total
         }
         printf "\n" }' <&3 >&2 || true
  exec 3<&-
fi
echo "$report"

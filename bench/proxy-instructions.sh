#!/usr/bin/env bash
# User-space instructions per request through `softprobe proxy`, counted by callgrind. Unlike a
# time, the count does not move with the host's load (runs repeat to within about 0.1 %), so two
# builds can be compared on a busy machine. It is not a speed: the kernel's work (loopback TCP,
# wake-ups; about 60 % of a passthrough hop's CPU) is not counted.
#
#   bench/proxy-instructions.sh passthrough|mocked|capture SOFTPROBE_BINARY FILTER_WASM
#
# passthrough: untagged GETs through a proxy (one worker) to a `softprobe serve` upstream.
# mocked:      tagged GETs through `proxy --serve-runtime`, answered by a mock rule.
# capture:     tagged GETs of a capture session through `proxy --serve-runtime`: the inject
#              miss, the upstream (the runtime's own /health, reached in process) and the
#              trace upload all run in the one process counted.
# Needs valgrind, wrk and curl; takes about a minute. Ports from PORT_BASE (default 18400) on.
set -euo pipefail

mode=${1:?passthrough|mocked|capture} bin=${2:?softprobe binary} wasm=${3:?filter .wasm}
base=${PORT_BASE:-18400}
runtime_port=$base proxy_port=$((base + 2))
work=$(mktemp -d)
pids=()
cleanup() {
    for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
    wait 2>/dev/null || true
    if [ -n "${KEEP:-}" ]; then cp "$work"/callgrind.*.1 "$KEEP"; fi
    rm -rf "$work"
}
trap cleanup EXIT

config="{\"traffic_direction\":\"inbound\",\"sp_backend_url\":\"http://127.0.0.1:$runtime_port\",\"service_name\":\"bench\"}"
callgrind=(valgrind --tool=callgrind --smc-check=all --callgrind-out-file="$work/callgrind.%p")
case $mode in
passthrough)
    "$bin" serve --listen "127.0.0.1:$runtime_port" --grpc-listen "127.0.0.1:$((base + 1))" \
        --capture-dir "$work" >"$work/upstream.log" 2>&1 &
    pids+=($!)
    "${callgrind[@]}" "$bin" proxy --workers 1 --listen "127.0.0.1:$proxy_port" \
        --upstream "http://127.0.0.1:$runtime_port" --filter "$wasm" --config "$config" \
        >"$work/proxy.log" 2>&1 &
    ;;
mocked | capture)
    SOFTPROBE_LISTEN_ADDR="127.0.0.1:$runtime_port" SOFTPROBE_GRPC_LISTEN_ADDR="127.0.0.1:$((base + 1))" \
        SOFTPROBE_CAPTURE_DIR="$work" "${callgrind[@]}" "$bin" proxy --serve-runtime \
        --listen "127.0.0.1:$proxy_port" --upstream "http://127.0.0.1:$runtime_port" \
        --filter "$wasm" --config "$config" >"$work/proxy.log" 2>&1 &
    ;;
*)
    echo "mode: passthrough, mocked or capture" >&2
    exit 2
    ;;
esac
proxy=$!
pids+=("$proxy")

# Under valgrind the proxy takes a while to compile the filter.
for _ in $(seq 180); do
    curl -sf -o /dev/null "http://127.0.0.1:$proxy_port/health" && break
    sleep 1
done

header=()
runtime="http://127.0.0.1:$runtime_port"
session() {
    curl -sf -X POST "$runtime/v1/sessions" -H 'content-type: application/json' \
        -d "{\"mode\":\"$1\"}" | sed -E 's/.*"sessionId":"([^"]+)".*/\1/'
}
case $mode in
mocked)
    session=$(session replay)
    curl -sf -o /dev/null -X POST "$runtime/v1/sessions/$session/rules" -H 'content-type: application/json' \
        -d '{"rules":[{"name":"health","when":{"direction":"inbound","path":"/health"},"then":{"action":"mock","response":{"status":200,"body":"mocked"}}}]}'
    header=(-H "x-softprobe-session-id: $session")
    answer=$(curl -sf "${header[@]}" "http://127.0.0.1:$proxy_port/health")
    [ "$answer" = mocked ] || { echo "the hop was not mocked: $answer" >&2; exit 1; }
    ;;
capture)
    session=$(session capture)
    header=(-H "x-softprobe-session-id: $session")
    curl -sf -o /dev/null "${header[@]}" "http://127.0.0.1:$proxy_port/health"
    ;;
esac

url="http://127.0.0.1:$proxy_port/health"
wrk -t1 -c8 -d4s "${header[@]}" "$url" >/dev/null # warm-up: connections, caches, allocator
callgrind_control -z "$proxy" >/dev/null 2>&1
measured=$(wrk -t1 -c8 -d8s "${header[@]}" "$url")
callgrind_control -d "$proxy" >/dev/null 2>&1
if grep -q "Non-2xx" <<<"$measured"; then
    echo "errors during the run:" >&2
    echo "$measured" >&2
    exit 1
fi
requests=$(awk '/requests in/ {print $1}' <<<"$measured")
sleep 1
dump=$(ls -t "$work"/callgrind.*.1 | head -1)
instructions=$(awk '/^(summary|totals):/ {n = $2} END {print n}' "$dump")
echo "$mode: $requests requests, $((instructions / requests)) instructions per request"

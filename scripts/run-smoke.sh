#!/usr/bin/env bash
# `make run` as a new user starts it: it must print its banner, answer a REST call with the
# token it printed, and stop cleanly on Ctrl-C (SIGINT). Ports are free ones, var/ a temporary one.
set -euo pipefail
cd "$(dirname "$0")/.."
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
work=$(mktemp -d /tmp/switchboard-run.XXXXXX)
export SWITCHBOARD_HTTP_PORT=$(free_port) SWITCHBOARD_GRPC_PORT=$(free_port)
export SWITCHBOARD_ENVOY_ADMIN_PORT=$(free_port) SWITCHBOARD_VAR_DIR="$work/var"
export SWITCHBOARD_DATABASE_URL="sqlite+aiosqlite:///$work/var/switchboard.db"
setsid make run >"$work/out" 2>&1 &
group=$!
stop() { kill -INT -- "-$group" 2>/dev/null || true; }
trap 'stop; rm -rf "$work"' EXIT
for _ in $(seq 1 120); do
  grep -q '^Switchboard is running' "$work/out" && break
  kill -0 "$group" 2>/dev/null || { cat "$work/out"; echo "make run exited early" >&2; exit 1; }
  sleep 0.5
done
grep -q '^Switchboard is running' "$work/out" || { cat "$work/out"; echo "no banner in 60 s" >&2; exit 1; }
token=$(sed -n 's/^ *export TOKEN=//p' "$work/out")
status=$(curl -s -o "$work/body" -w '%{http_code}' "localhost:$SWITCHBOARD_HTTP_PORT/communication/message/sms" \
  -H "Authorization: Bearer $token" -H 'Content-Type: application/json' \
  -d '{"Messages":[{"channel":"smpp","to":"+27821234567","content":"smoke","clientMessageId":"smoke-1"}]}')
echo "POST /communication/message/sms -> $status $(head -c 200 "$work/body")"
[ "$status" = 200 ] || { cat "$work/out"; exit 1; }
stop
for _ in $(seq 1 60); do kill -0 "$group" 2>/dev/null || break; sleep 0.5; done
if kill -0 "$group" 2>/dev/null; then echo "make run did not stop on SIGINT" >&2; kill -KILL -- "-$group"; exit 1; fi
echo "make run: started, answered, stopped"

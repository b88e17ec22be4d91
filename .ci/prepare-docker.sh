#!/usr/bin/env bash
# Prepare a real Docker engine for the Docker tests on a clean Debian machine (as root):
# install docker.io, docker-compose and mmdebstrap from Debian when missing, start dockerd
# when it is not running, build the offline Debian base image the tests run (no registry
# here), then the images of the chaos-demo Compose system (docker/build-images.sh).
# Idempotent: each step is skipped when its result is already there. Prints what it does.
set -euo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE="${CHAOS_RUNNER_BASE_IMAGE:-chaos-runner/base:bookworm}"
DOCKERD_TIMEOUT="${DOCKERD_TIMEOUT:-60}"
DOCKERD_LOG="${DOCKERD_LOG:-/tmp/dockerd.log}"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
elapsed() { local ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }
say() { printf '[prepare-docker] %s\n' "$*"; }
started=$(now_ms)

# 1. Packages. Compose v2 (the docker plugin) is not in Debian bookworm; docker-compose 1.29
#    is, and the demo's Compose file is written for both.
missing=()
command -v dockerd >/dev/null || missing+=(docker.io)
command -v mmdebstrap >/dev/null || missing+=(mmdebstrap)
if ! command -v docker-compose >/dev/null \
  && ! { command -v docker >/dev/null && docker compose version >/dev/null 2>&1; }; then
  missing+=(docker-compose)
fi
if [ ${#missing[@]} -gt 0 ]; then
  t0=$(now_ms)
  say "installing ${missing[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
    "${missing[@]}" >/dev/null
  say "installed ${missing[*]} in $(elapsed "$t0")"
else
  say "docker, docker-compose and mmdebstrap are installed"
fi

# 2. The engine.
if docker info >/dev/null 2>&1; then
  say "dockerd is running"
else
  t0=$(now_ms)
  say "starting dockerd (log: $DOCKERD_LOG)"
  nohup dockerd >"$DOCKERD_LOG" 2>&1 &
  deadline=$(($(date +%s) + DOCKERD_TIMEOUT))
  until docker info >/dev/null 2>&1; do
    if [ "$(date +%s)" -ge "$deadline" ]; then
      echo "prepare-docker: dockerd did not answer within ${DOCKERD_TIMEOUT}s; last lines of" \
        "$DOCKERD_LOG:" >&2
      tail -n 20 "$DOCKERD_LOG" >&2 || true
      exit 1
    fi
    sleep 0.5
  done
  say "dockerd answered after $(elapsed "$t0")"
fi

# 3. The tests' base image: Debian essential with python3 and the network tools.
if docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  say "base image $BASE_IMAGE is present"
else
  t0=$(now_ms)
  say "building base image $BASE_IMAGE with mmdebstrap"
  mmdebstrap --quiet --variant=essential \
    --include=python3,iproute2,iptables,ca-certificates,procps bookworm - \
    | docker import - "$BASE_IMAGE" >/dev/null
  say "built $BASE_IMAGE in $(elapsed "$t0")"
fi

# 4. The chaos-demo system's images.
bash docker/build-images.sh

say "docker ready in $(elapsed "$started"): engine $(docker version --format '{{.Server.Version}}')," \
  "compose $(docker-compose version --short 2>/dev/null || docker compose version --short)"

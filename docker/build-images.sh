#!/usr/bin/env bash
# Build the images of the chaos-demo system (docker-compose.yml): chaos-runner/demo-app,
# chaos-runner/demo-lb and chaos-runner/demo-redis. Each Dockerfile takes its base as the
# build argument BASE, the public image by default (python:3.11-slim, haproxy:3.0, redis:7).
# Where a public base can neither be found locally nor pulled (no registry), one local Debian
# base with every tool the three need is built with mmdebstrap and used instead.
#
# Idempotent: the offline base is built only when missing (or built from another package
# list), and image builds hit Docker's cache when nothing changed.
#
# Environment:
#   APP_BASE, LB_BASE, REDIS_BASE   force a base image (also read by docker-compose.yml)
#   CHAOS_DEMO_OFFLINE=1            do not try to pull: use the offline base at once
#   CHAOS_DEMO_OFFLINE_BASE         the offline base's tag (chaos-runner/base-demo:bookworm)
#   CHAOS_DEMO_SUITE                the Debian suite of the offline base (bookworm)
set -euo pipefail
cd "$(dirname "$0")/.."

SUITE="${CHAOS_DEMO_SUITE:-bookworm}"
OFFLINE_BASE="${CHAOS_DEMO_OFFLINE_BASE:-chaos-runner/base-demo:$SUITE}"
# bash and coreutils are Essential and always there; the load balancer's healthcheck uses them.
OFFLINE_PACKAGES="python3,haproxy,redis-server,redis-sentinel,ca-certificates,procps,iproute2,iptables"
PACKAGES_LABEL="chaos-runner.base-packages"

now_ms() { echo $(($(date +%s%N) / 1000000)); }
elapsed() { local ms=$(($(now_ms) - $1)); printf '%d.%d s' $((ms / 1000)) $((ms % 1000 / 100)); }
started=$(now_ms)
say() { printf '[build-images] %s\n' "$*"; }

have_image() { docker image inspect "$1" >/dev/null 2>&1; }

# True when the image is on the engine or can be pulled now.
obtainable() {
  have_image "$1" && return 0
  [ "${CHAOS_DEMO_OFFLINE:-0}" = 1 ] && return 1
  timeout 120 docker pull -q "$1" >/dev/null 2>&1
}

offline_base() {
  local current
  current=$(docker image inspect -f "{{index .Config.Labels \"$PACKAGES_LABEL\"}}" \
    "$OFFLINE_BASE" 2>/dev/null || true)
  if [ "$current" = "$OFFLINE_PACKAGES" ]; then
    return 0
  fi
  command -v mmdebstrap >/dev/null || {
    echo "build-images: the public base images cannot be pulled and mmdebstrap is missing" \
      "to build $OFFLINE_BASE (apt-get install mmdebstrap, or set APP_BASE, LB_BASE and" \
      "REDIS_BASE to local images)" >&2
    exit 1
  }
  local t0
  t0=$(now_ms)
  say "building the offline base $OFFLINE_BASE ($SUITE: $OFFLINE_PACKAGES)"
  mmdebstrap --quiet --variant=essential --include="$OFFLINE_PACKAGES" "$SUITE" - \
    | docker import -c "LABEL $PACKAGES_LABEL=$OFFLINE_PACKAGES" -c 'CMD ["bash"]' \
      - "$OFFLINE_BASE" >/dev/null
  say "built $OFFLINE_BASE in $(elapsed "$t0")"
}

# The base for one image: the variable if set, else the public image if obtainable, else
# the offline base (built on first need).
choose_base() {
  local forced="$1" public="$2"
  if [ -n "$forced" ]; then
    echo "$forced"
  elif obtainable "$public"; then
    echo "$public"
  else
    offline_base >&2
    echo "$OFFLINE_BASE"
  fi
}

build() {
  local tag="$1" context="$2" base="$3" t0 log
  t0=$(now_ms)
  # The builder's output is shown only when it fails (it warns on every build otherwise).
  if ! log=$(docker build -q --force-rm --build-arg "BASE=$base" -t "$tag" "$context" 2>&1); then
    printf '%s\n' "$log" >&2
    echo "build-images: building $tag from $context on $base failed" >&2
    exit 1
  fi
  say "$tag on $base: $(elapsed "$t0")"
}

build chaos-runner/demo-redis:latest docker/redis "$(choose_base "${REDIS_BASE:-}" redis:7)"
build chaos-runner/demo-app:latest docker/app "$(choose_base "${APP_BASE:-}" python:3.11-slim)"
build chaos-runner/demo-lb:latest docker/lb "$(choose_base "${LB_BASE:-}" haproxy:3.0)"
say "all images built in $(elapsed "$started")"

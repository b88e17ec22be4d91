#!/usr/bin/env bash
# Prepare a real Docker engine for the Docker tests on a clean Debian machine (as root):
# install docker.io and mmdebstrap when missing, start dockerd when it is not running, and
# build the offline Debian base image the tests use when it is absent (no registry here).
set -euo pipefail
BASE_IMAGE="${CHAOS_RUNNER_BASE_IMAGE:-chaos-runner/base:bookworm}"
if ! command -v dockerd >/dev/null || ! command -v mmdebstrap >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq docker.io mmdebstrap >/dev/null
fi
if ! docker info >/dev/null 2>&1; then
  (dockerd >/tmp/dockerd.log 2>&1 &)
  for _ in $(seq 1 60); do docker info >/dev/null 2>&1 && break; sleep 1; done
  docker info >/dev/null 2>&1 || { echo "dockerd did not start; see /tmp/dockerd.log" >&2; exit 1; }
fi
if ! docker image inspect "$BASE_IMAGE" >/dev/null 2>&1; then
  mmdebstrap --variant=essential \
    --include=python3,iproute2,iptables,ca-certificates,procps bookworm - \
    | docker import - "$BASE_IMAGE"
fi
echo "docker ready: $(docker version --format '{{.Server.Version}}'), base image $BASE_IMAGE"

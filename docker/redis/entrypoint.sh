#!/bin/sh
# chaos-demo-redis run|health: start, or check, the part named by DEMO_REDIS_ROLE.
# The configuration is copied into /data once and then left alone: Redis and Sentinel rewrite
# it on failover (who is primary, the config epoch), and a restarted container must remember.
set -eu
role="${DEMO_REDIS_ROLE:-primary}"
case "$role" in
  primary|replica) port=6379 ;;
  sentinel) port=26379 ;;
  *) echo "chaos-demo-redis: DEMO_REDIS_ROLE must be primary, replica or sentinel, not '$role'" >&2; exit 2 ;;
esac

case "${1:-run}" in
  health)
    exec sh -c "redis-cli -p $port ping | grep -q PONG" ;;
  run)
    conf="/data/$role.conf"
    [ -f "$conf" ] || cp "/etc/chaos-demo/$role.conf" "$conf"
    if [ "$role" = sentinel ]; then
      exec redis-server "$conf" --sentinel
    fi
    exec redis-server "$conf" ;;
  *)
    echo "usage: chaos-demo-redis run|health" >&2; exit 2 ;;
esac

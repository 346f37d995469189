#!/bin/sh
# The worker image's entry point: start this container's Ray node.
#   ray-node head              the Ray head (GCS on port 6379), no CPUs or GPUs for jobs by default
#   ray-node worker            a worker node joining $RAY_HEAD_ADDRESS with every CPU and GPU it sees
#   ray-node scheduler [ARGS]  a node with no resources, then `symopt scheduler ARGS` on it
# The scheduler is a Ray driver, not a Ray Client (ray://): it streams each run's events through a
# generator task, which Ray Client cannot carry, and a driver needs a Ray node on its own host.
# Token authentication (RAY_AUTH_MODE, RAY_AUTH_TOKEN) comes from the environment: set it the
# same way on every node and on the scheduler (docker/.env.example).
set -eu

head_address=${RAY_HEAD_ADDRESS:-ray-head:6379}
role=${1:-worker}
[ "$#" -gt 0 ] && shift

case "$role" in
  head)
    exec ray start --head --port=6379 --num-cpus="${RAY_HEAD_NUM_CPUS:-0}" --num-gpus=0 \
      --include-dashboard=false --disable-usage-stats --block "$@"
    ;;
  worker)
    exec ray start --address="$head_address" --disable-usage-stats --block "$@"
    ;;
  scheduler)
    ray start --address="$head_address" --num-cpus=0 --num-gpus=0 --disable-usage-stats
    export RAY_ADDRESS=auto  # the node just started on this host
    exec symopt scheduler "$@"
    ;;
  *)
    echo "ray-node: unknown role '$role' (head, worker or scheduler)" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# A single-node SLURM cluster and a PostgreSQL server on this machine, for the tests marked
# `cluster` (tests/test_cluster.py) and CI. Everything lives in $APRELU_CLUSTER_STATE
# (default /tmp/aprelu-cluster); `stop` ends only the PIDs `start` wrote there.
#   bash scripts/local_cluster.sh start|stop|status
#   bash scripts/local_cluster.sh node-fail|node-return   (a node failure, for the tests)
# After start: `source $APRELU_CLUSTER_STATE/env` gives SLURM_CONF (sbatch, srun, squeue use it),
# and $APRELU_CLUSTER_STATE/postgres.url holds the test database's URL.
# Ports (not SLURM's or PostgreSQL's defaults, so a system cluster is left alone):
# APRELU_SLURM_PORT (slurmctld; slurmd takes the next one) and APRELU_PG_PORT.
set -euo pipefail
STATE=${APRELU_CLUSTER_STATE:-/tmp/aprelu-cluster}
SLURM_PORT=${APRELU_SLURM_PORT:-16817}
PG_PORT=${APRELU_PG_PORT:-15432}
PG_BIN=${APRELU_PG_BIN:-$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -1)}
HOST=$(hostname -s)

say() { echo "local_cluster: $*" >&2; }

install_missing() {
  local need=()
  command -v slurmctld >/dev/null || need+=(slurm-wlm)
  command -v munged >/dev/null || need+=(munge)
  [ -n "$PG_BIN" ] && [ -x "$PG_BIN/initdb" ] || need+=(postgresql)
  if [ ${#need[@]} -gt 0 ]; then
    say "installing ${need[*]} with apt-get"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
    PG_BIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  fi
}

# Start a daemon in the foreground of a background job and record its PID (the daemon's own:
# setpriv execs, so the PID is the process `stop` must end).
launch() {  # name user command...
  local name=$1 user=$2; shift 2
  setsid setpriv --reuid="$user" --regid="$user" --init-groups -- "$@" \
    >"$STATE/log/$name.log" 2>&1 </dev/null &
  echo $! >"$STATE/pids/$name"
}

wait_for() {  # what seconds command...
  local what=$1 seconds=$2; shift 2
  for _ in $(seq "$((seconds * 4))"); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.25
  done
  say "$what did not answer within ${seconds}s; logs in $STATE/log"
  tail -n 20 "$STATE"/log/*.log >&2 || true
  return 1
}

write_slurm_conf() {
  cat >"$STATE/slurm/slurm.conf" <<CONF
ClusterName=aprelu
SlurmctldHost=$HOST
SlurmctldPort=$SLURM_PORT
SlurmdPort=$((SLURM_PORT + 1))
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
AuthInfo=socket=$STATE/munge/munge.socket
CredType=cred/munge
StateSaveLocation=$STATE/slurm/state
SlurmdSpoolDir=$STATE/slurm/spool
SlurmctldPidFile=$STATE/slurm/slurmctld.pid
SlurmdPidFile=$STATE/slurm/slurmd.pid
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none
JobCompType=jobcomp/none
MpiDefault=none
ReturnToService=2
SchedulerType=sched/backfill
SlurmctldTimeout=30
SlurmdTimeout=30
InactiveLimit=0
KillWait=5
MinJobAge=300
# Preemption as clusters set it up: a job of a higher partition tier takes the CPUs; the job it
# preempts gets SIGTERM, GraceTime seconds to stop, then SIGKILL, and is requeued.
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
NodeName=$HOST CPUs=$(nproc) State=UNKNOWN
PartitionName=debug Nodes=$HOST Default=YES MaxTime=INFINITE State=UP PriorityTier=1 GraceTime=60
PartitionName=urgent Nodes=$HOST MaxTime=INFINITE State=UP PriorityTier=10
CONF
}

start() {
  if [ -f "$STATE/env" ] && status >/dev/null 2>&1; then
    say "already running ($STATE)"; return 0
  fi
  stop >/dev/null 2>&1 || true
  install_missing
  local t0=$SECONDS
  rm -rf "$STATE"
  mkdir -p "$STATE"/{pids,log,munge,slurm/state,slurm/spool,pg}
  chmod 755 "$STATE"

  # munge: its own key and socket, run as user munge (munged refuses root)
  chown munge:munge "$STATE/munge"; chmod 700 "$STATE/munge"
  mungekey --create --keyfile="$STATE/munge/munge.key" --force
  chown munge:munge "$STATE/munge/munge.key"; chmod 400 "$STATE/munge/munge.key"
  chmod 711 "$STATE/munge"  # slurm (root) and clients reach the socket inside
  launch munged munge munged --foreground --force --key-file="$STATE/munge/munge.key" \
    --socket="$STATE/munge/munge.socket" --pid-file="$STATE/munge/munged.pid" \
    --log-file="$STATE/log/munged.file.log" --seed-file="$STATE/munge/munge.seed"
  wait_for munged 20 munge --socket="$STATE/munge/munge.socket" -n

  write_slurm_conf
  export SLURM_CONF=$STATE/slurm/slurm.conf
  launch slurmctld root slurmctld -D -f "$SLURM_CONF"
  launch slurmd root slurmd -D -f "$SLURM_CONF"

  # PostgreSQL: a fresh cluster as user postgres, TCP on localhost with passwords, its socket here
  chown postgres:postgres "$STATE/pg"
  setpriv --reuid=postgres --regid=postgres --init-groups -- "$PG_BIN/initdb" -D "$STATE/pg/data" \
    -U postgres --auth-local=trust --auth-host=scram-sha-256 >"$STATE/log/initdb.log" 2>&1
  launch postgres postgres "$PG_BIN/postgres" -D "$STATE/pg/data" -p "$PG_PORT" \
    -k "$STATE/pg" -c listen_addresses=127.0.0.1 -c fsync=off
  wait_for postgres 30 "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT"
  local password=aprelu-test-pw
  "$PG_BIN/psql" -q -h "$STATE/pg" -p "$PG_PORT" -U postgres -v ON_ERROR_STOP=1 \
    -c "CREATE USER aprelu PASSWORD '$password'" -c "CREATE DATABASE aprelu_test OWNER aprelu" \
    >/dev/null
  echo "postgresql://aprelu:$password@127.0.0.1:$PG_PORT/aprelu_test" >"$STATE/postgres.url"

  wait_for "slurm (sinfo: node idle)" 60 sh -c "sinfo -h -o %t | grep -qx idle"
  wait_for "srun hostname" 60 timeout 20 srun -t 1 hostname
  {
    echo "export SLURM_CONF=$SLURM_CONF"
    echo "export APRELU_CLUSTER_STATE=$STATE"
  } >"$STATE/env"
  say "up in $((SECONDS - t0))s: SLURM node $HOST ($(nproc) CPUs), PostgreSQL on 127.0.0.1:$PG_PORT; source $STATE/env"
}

stop() {
  [ -d "$STATE/pids" ] || { say "nothing started in $STATE"; return 0; }
  local name pid
  # slurm first (its jobs end with slurmd), the database last
  for name in slurmd slurmctld munged postgres; do
    [ -f "$STATE/pids/$name" ] || continue
    pid=$(cat "$STATE/pids/$name")
    if kill -0 "$pid" 2>/dev/null; then
      kill -TERM "$pid" 2>/dev/null || true
      for _ in $(seq 40); do kill -0 "$pid" 2>/dev/null || break; sleep 0.25; done
      kill -0 "$pid" 2>/dev/null && kill -KILL "$pid" 2>/dev/null || true
    fi
    rm -f "$STATE/pids/$name"
    # what slurmd leaves when it ends: the steps of jobs still running, and their tasks
    [ "$name" = slurmd ] && kill_job_processes
  done
  rm -f "$STATE/env"
  say "stopped (state kept in $STATE)"
}

# A node failure, for the tests: the node's slurmd and every process of its jobs (slurmstepd and
# the tasks it started, which carry this cluster's SLURM_CONF and a SLURM_JOB_ID) get SIGKILL at once.
# The controller notices when the node stops answering (SlurmdTimeout) and requeues its jobs.
kill_job_processes() {
  local proc environ conf=$STATE/slurm/slurm.conf
  for proc in /proc/[0-9]*; do
    environ=$( { tr '\0' '\n' <"$proc/environ"; } 2>/dev/null ) || continue
    grep -qx "SLURM_CONF=$conf" <<<"$environ" || continue
    if [ "$( { cat "$proc/comm"; } 2>/dev/null )" = slurmstepd ] || grep -q '^SLURM_JOB_ID=' <<<"$environ"; then
      kill -KILL "${proc#/proc/}" 2>/dev/null || true
    fi
  done
}

node_fail() {
  kill -KILL "$(cat "$STATE/pids/slurmd")" 2>/dev/null || true
  rm -f "$STATE/pids/slurmd"
  kill_job_processes
  say "node $HOST failed: slurmd and its jobs' processes killed"
}

# The failed node back: slurmd again (ReturnToService=2 puts the node back in service).
node_return() {
  export SLURM_CONF=$STATE/slurm/slurm.conf
  launch slurmd root slurmd -D -f "$SLURM_CONF"
  wait_for "slurm node back in service" 120 sh -c "sinfo -h -o %t | grep -qE '^(idle|alloc|mix)$'"
  say "node $HOST back"
}

status() {
  local name pid ok=0
  for name in munged slurmctld slurmd postgres; do
    pid=$(cat "$STATE/pids/$name" 2>/dev/null || true)
    if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then echo "$name: running (pid $pid)"
    else echo "$name: not running"; ok=1; fi
  done
  if [ $ok -eq 0 ]; then
    SLURM_CONF=$STATE/slurm/slurm.conf sinfo -h -o "slurm node %n: %t, %c CPUs" || ok=1
    "$PG_BIN/pg_isready" -h 127.0.0.1 -p "$PG_PORT" || ok=1
  fi
  return $ok
}

case "${1:-}" in
  start) start ;;
  stop) stop ;;
  status) status ;;
  node-fail) node_fail ;;
  node-return) node_return ;;
  *) echo "usage: bash scripts/local_cluster.sh start|stop|status|node-fail|node-return" >&2; exit 2 ;;
esac

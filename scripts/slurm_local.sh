#!/usr/bin/env bash
# A one-node Slurm cluster on loopback, from Debian's packages, for testing sweeps
# through Hydra's submitit launcher (hydra/launcher=submitit_slurm) on one machine.
#
#   scripts/slurm_local.sh install      # apt-get install slurmctld slurmd slurm-client munge
#   eval "$(scripts/slurm_local.sh start)"   # start munged, slurmctld, slurmd; exports SLURM_CONF
#   sinfo; python -m experiments.train -m hydra/launcher=submitit_slurm rule=bp,manual_bp
#   scripts/slurm_local.sh stop         # stop the daemons this script started
#   scripts/slurm_local.sh status       # exit 0 if the node answers, 1 otherwise
#
# The cluster: NodeAddr 127.0.0.1, every local CPU, proctrack/linuxproc, task/none (no
# cgroups needed, so it runs in containers), no accounting. Two partitions on the node:
# 'local' (the default) and 'urgent', whose jobs pre-empt the 'local' jobs whose CPUs
# they need (PreemptMode=REQUEUE: killed and requeued), e.g.
#   sbatch -p urgent -c "$(nproc)" --wrap true
# A requeued job may restart after SLURM_LOCAL_CRED_EXPIRE + 1 seconds (default 5 + 1;
# Slurm's own default is 120 + 1). Daemons run as root (start needs root). Nothing
# under /etc/slurm is touched: the configuration, state, logs and pid files live in
# $SLURM_LOCAL_DIR (default /tmp/bp-alternatives-slurm), and clients find it through
# SLURM_CONF, which `start` prints as an `export` line on stdout (all progress goes to
# stderr, so `eval "$(... start)"` works).
set -euo pipefail

DIR="${SLURM_LOCAL_DIR:-/tmp/bp-alternatives-slurm}"
CONF="$DIR/slurm.conf"
# seconds a requeued job waits before it restarts (and job step credential lifetime)
CRED_EXPIRE="${SLURM_LOCAL_CRED_EXPIRE:-5}"
NODE="$(hostname -s)"
PACKAGES=(slurmctld slurmd slurm-client munge)

log() { echo "slurm_local: $*" >&2; }
die() { log "error: $*"; exit 1; }

install() {
  local missing=()
  for cmd in slurmctld slurmd sbatch munged; do
    command -v "$cmd" >/dev/null 2>&1 || missing+=("$cmd")
  done
  if [ ${#missing[@]} -eq 0 ]; then
    log "already installed (slurmctld, slurmd, sbatch, munged found)"
    return 0
  fi
  [ "$(id -u)" -eq 0 ] || die "installing ${PACKAGES[*]} needs root (missing: ${missing[*]})"
  command -v apt-get >/dev/null 2>&1 || die "no apt-get: install ${PACKAGES[*]} yourself"
  log "installing ${PACKAGES[*]} with apt-get"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >&2
  apt-get install -y -qq "${PACKAGES[@]}" >&2
}

write_conf() {  # write_conf [FILE]: the configuration, to $CONF by default
  local out="${1:-$CONF}" cpus mem_mb
  cpus="$(nproc)"
  mem_mb="$(awk '/MemTotal/ {print int($2 / 1024 * 0.9)}' /proc/meminfo)"
  mkdir -p "$DIR/state" "$DIR/spool"
  cat >"$out" <<EOF
# Written by scripts/slurm_local.sh: a one-node cluster on loopback.
ClusterName=bpalt
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
# a requeued job (pre-emption, scontrol requeue) waits cred_expire + 1 s before it may
# start again (Slurm's default: 120 s); the job step credentials live as long
AuthInfo=cred_expire=$CRED_EXPIRE
StateSaveLocation=$DIR/state
SlurmdSpoolDir=$DIR/spool
SlurmctldPidFile=$DIR/slurmctld.pid
SlurmdPidFile=$DIR/slurmd.pid
SlurmctldLogFile=$DIR/slurmctld.log
SlurmdLogFile=$DIR/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
SchedulerType=sched/backfill
# test pending jobs every second, not every 30-60 s: a requeued job restarts as soon
# as its wait is over
SchedulerParameters=sched_interval=1,bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
MpiDefault=none
ReturnToService=2
SlurmdTimeout=60
InactiveLimit=0
# SIGTERM -> SIGKILL: submitit's jobs ignore SIGTERM and train on until killed, about
# KillWait + 2 s after they are pre-empted or cancelled
KillWait=1
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=$mem_mb State=UNKNOWN
# pre-emption as on a shared cluster: a job in 'urgent' that needs the CPUs of running
# 'local' jobs pre-empts them; they are requeued (killed, then run again from the start)
PreemptType=preempt/partition_prio
PreemptMode=REQUEUE
PartitionName=local Nodes=$NODE Default=YES MaxTime=INFINITE State=UP PriorityTier=1
PartitionName=urgent Nodes=$NODE MaxTime=INFINITE State=UP PriorityTier=2 PreemptMode=OFF
EOF
}

pid_alive() {
  local pid
  pid="$(cat "$1" 2>/dev/null || true)"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null
}

munge_ok() { munge -n 2>/dev/null | unmunge >/dev/null 2>&1; }

start_munge() {
  if munge_ok; then
    log "munged already running"
    return 0
  fi
  [ -s /etc/munge/munge.key ] || {
    log "creating /etc/munge/munge.key"
    mungekey --create --keyfile=/etc/munge/munge.key 2>/dev/null \
      || dd if=/dev/urandom of=/etc/munge/munge.key bs=1 count=1024 status=none
  }
  chown munge:munge /etc/munge/munge.key && chmod 400 /etc/munge/munge.key
  mkdir -p /run/munge /var/log/munge /var/lib/munge
  chown munge:munge /run/munge /var/log/munge /var/lib/munge
  chmod 755 /run/munge
  runuser -u munge -- /usr/sbin/munged
  touch "$DIR/started_munged"
  for _ in $(seq 50); do munge_ok && return 0; sleep 0.2; done
  die "munged did not start (see /var/log/munge/munged.log)"
}

node_state() {
  SLURM_CONF="$CONF" sinfo -h -N -n "$NODE" -o '%T' 2>/dev/null | head -1
}

start() {
  [ "$(id -u)" -eq 0 ] || die "start needs root"
  command -v slurmctld >/dev/null 2>&1 || die "Slurm is not installed: run '$0 install'"
  if [ -f "$CONF" ] && status >/dev/null 2>&1; then
    # a cluster started by an older version of this script is restarted
    write_conf "$CONF.new"
    if cmp -s "$CONF" "$CONF.new"; then
      rm -f "$CONF.new"
      log "already running ($CONF)"
      echo "export SLURM_CONF=$CONF"
      return 0
    fi
    rm -f "$CONF.new"
    log "running with another configuration: restarting"
  fi
  stop_daemons quiet
  write_conf
  start_munge
  rm -rf "$DIR/state"/* "$DIR/spool"/*
  slurmctld -f "$CONF" || die "slurmctld failed: $(tail -n 20 "$DIR/slurmctld.log" 2>&1)"
  slurmd -f "$CONF" -N "$NODE" || die "slurmd failed: $(tail -n 20 "$DIR/slurmd.log" 2>&1)"
  local state=""
  for _ in $(seq 120); do
    state="$(node_state || true)"
    case "$state" in
      idle | mixed | allocated) break ;;
    esac
    sleep 0.5
  done
  case "$state" in
    idle | mixed | allocated) ;;
    *)
      log "node $NODE is '${state:-not answering}' after 60 s"
      log "slurmctld.log: $(tail -n 20 "$DIR/slurmctld.log" 2>&1)"
      log "slurmd.log: $(tail -n 20 "$DIR/slurmd.log" 2>&1)"
      stop_daemons quiet
      exit 1
      ;;
  esac
  log "one-node cluster up: node $NODE ($state), partition 'local', conf $CONF"
  echo "export SLURM_CONF=$CONF"
}

kill_pidfile() {
  local f="$1" pid
  [ -f "$f" ] || return 0
  pid="$(cat "$f" 2>/dev/null || true)"
  if [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null; then
    kill "$pid" 2>/dev/null || true
    for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -0 "$pid" 2>/dev/null && kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$f"
}

stop_daemons() {
  if [ -f "$CONF" ] && pid_alive "$DIR/slurmctld.pid"; then
    SLURM_CONF="$CONF" scancel --user=root >/dev/null 2>&1 || true
  fi
  kill_pidfile "$DIR/slurmd.pid"
  kill_pidfile "$DIR/slurmctld.pid"
  if [ -f "$DIR/started_munged" ]; then
    kill_pidfile /run/munge/munged.pid
    rm -f "$DIR/started_munged"
  fi
  [ "${1:-}" = quiet ] || log "stopped"
}

status() {
  [ -f "$CONF" ] || { log "not configured ($CONF missing)"; return 1; }
  # no daemons, no question to ask (sinfo would wait for a controller that is gone)
  pid_alive "$DIR/slurmctld.pid" || { log "slurmctld not running"; return 1; }
  pid_alive "$DIR/slurmd.pid" || { log "slurmd not running"; return 1; }
  local state
  state="$(node_state || true)"
  case "$state" in
    idle | mixed | allocated) log "node $NODE: $state"; return 0 ;;
    *) log "node $NODE: ${state:-not answering}"; return 1 ;;
  esac
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop_daemons ;;
  status) status ;;
  *) echo "usage: $0 install|start|stop|status" >&2; exit 2 ;;
esac

#!/usr/bin/env bash
# A single-node SLURM cluster on this machine, for the cluster integration test.
#   scripts/slurm-local.sh start    install (Debian packages, when missing), configure, start; wait for an idle node
#   scripts/slurm-local.sh stop     stop the daemons it started
#   scripts/slurm-local.sh status   sinfo
# Needs root and apt-get. Idempotent: rerunning start on a running cluster only checks it.
# Touches the packages it installs, their config files (/etc/munge/munge.key, /etc/slurm/slurm.conf:
# jobs' own srun calls read the default path) and its state directory ($SLURM_LOCAL_STATE).
set -euo pipefail
state=${SLURM_LOCAL_STATE:-/var/lib/mergeeval-slurm}
partition=${SLURM_LOCAL_PARTITION:-debug}
cmd=${1:-start}

die() { echo "slurm-local: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || die "needs root (it installs and starts slurmctld, slurmd and munged)"

node_idle() { sinfo -h -N -o "%T" 2>/dev/null | grep -qE "^(idle|mixed|allocated)"; }

install() {
  local missing=()
  for bin in slurmctld slurmd sinfo munged; do command -v "$bin" >/dev/null || missing+=("$bin"); done
  [ ${#missing[@]} -eq 0 ] && return
  command -v apt-get >/dev/null || die "apt-get not found; install slurmctld slurmd slurm-client munge yourself"
  echo "slurm-local: installing slurmctld slurmd slurm-client munge"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends slurmctld slurmd slurm-client munge >/dev/null
}

configure() {
  mkdir -p "$state"/{spool,ctld,log,run} /etc/slurm /etc/munge /run/munge /var/log/munge /var/lib/munge
  if [ ! -s /etc/munge/munge.key ]; then
    dd if=/dev/urandom of=/etc/munge/munge.key bs=1024 count=1 status=none
  fi
  chown -R munge:munge /etc/munge /run/munge /var/log/munge /var/lib/munge 2>/dev/null || true
  chmod 400 /etc/munge/munge.key
  local host cpus mem
  host=$(hostname)
  cpus=$(nproc)
  mem=$(( $(awk '/MemTotal/ {print $2}' /proc/meminfo) / 1024 * 9 / 10 ))
  cat > /etc/slurm/slurm.conf <<CONF
# written by mergeeval scripts/slurm-local.sh (single-node test cluster)
ClusterName=mergeeval
SlurmctldHost=$host
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=$state/ctld
SlurmdSpoolDir=$state/spool
SlurmctldPidFile=$state/run/slurmctld.pid
SlurmdPidFile=$state/run/slurmd.pid
SlurmctldLogFile=$state/log/slurmctld.log
SlurmdLogFile=$state/log/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
JobAcctGatherType=jobacct_gather/none
MinJobAge=600
ReturnToService=2
NodeName=$host CPUs=$cpus RealMemory=$mem State=UNKNOWN
PartitionName=$partition Nodes=$host Default=YES MaxTime=INFINITE State=UP
CONF
}

start() {
  if node_idle; then echo "slurm-local: already running"; sinfo; return; fi
  install
  configure
  pgrep -x munged >/dev/null || munged --force
  pgrep -x slurmctld >/dev/null || slurmctld
  sleep 1
  pgrep -x slurmd >/dev/null || slurmd
  for _ in $(seq 60); do
    if node_idle; then sinfo; return; fi
    scontrol update nodename="$(hostname)" state=resume >/dev/null 2>&1 || true
    sleep 1
  done
  tail -20 "$state/log/slurmctld.log" "$state/log/slurmd.log" >&2 || true
  die "the node did not become idle within 60 s (logs above)"
}

stop() {
  pkill -x slurmd || true
  pkill -x slurmctld || true
  echo "slurm-local: stopped (munged left running)"
}

case "$cmd" in
  start) start ;;
  stop) stop ;;
  status) sinfo ;;
  *) die "usage: $0 start|stop|status" ;;
esac

#!/usr/bin/env bash
# A throw-away single-node SLURM cluster for testing profiles/slurm (docs/scale.md, workflow-conventions §6).
#   tests/slurm/setup_local_slurm.sh start DIR [--install]   start munged, slurmctld, slurmd; state under DIR
#   tests/slurm/setup_local_slurm.sh stop DIR                kill the three daemons (by their pid files)
# `start` prints shell lines to eval: SLURM_CONF=DIR/slurm.conf and PATH with DIR/bin first, where an `srun`
# shim re-exports SLURM_CONF (the slurm-jobstep plugin strips SLURM_* before its nested srun, so a
# slurm.conf outside /etc/slurm is otherwise lost). Two fake GPUs (char devices made with mknod, as
# gres.conf rejects plain files) give jobs real CUDA_VISIBLE_DEVICES values. Partitions `cpu` and `gpu`
# match profiles/slurm/profile.yaml. Nothing is written outside DIR; with --install, missing packages are
# installed with apt-get (root only). The node claims 32 GB (config_overrides) so the profile's requests fit. Exit status 3 = SLURM cannot be had here (caller should skip).
set -euo pipefail
action="${1:?usage: setup_local_slurm.sh start|stop DIR [--install]}"
dir="$(mkdir -p "${2:?missing DIR}" && cd "$2" && pwd)"
install="${3:-}"
ctl_port="${CLREPRO_SLURMCTLD_PORT:-16817}"
d_port="${CLREPRO_SLURMD_PORT:-16818}"

skip() { echo "SKIP: $*" >&2; exit 3; }

# munged runs as user munge, which cannot enter a private DIR (pytest's tmp dirs are 0700): its socket,
# key seed and log live in a world-traversable /tmp dir whose path is kept in DIR/munge_dir.
munge_dir() { cat "$dir/munge_dir" 2>/dev/null || true; }

stop() {
  m="$(munge_dir)"
  for f in "$dir"/slurm/slurmd.pid "$dir"/slurm/slurmctld.pid ${m:+"$m/munged.pid"}; do
    [ -f "$f" ] || continue
    pid="$(cat "$f")"
    if [ -n "$pid" ] && kill "$pid" 2>/dev/null; then
      for _ in $(seq 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
      kill -9 "$pid" 2>/dev/null || true
    fi
    rm -f "$f"
  done
  if [ -n "$m" ]; then rm -rf "$m"; rm -f "$dir/munge_dir"; fi
}

if [ "$action" = stop ]; then stop; exit 0; fi
[ "$action" = start ] || { echo "unknown action $action" >&2; exit 2; }

have_all() { command -v slurmctld && command -v slurmd && command -v munged && command -v sbatch; } >/dev/null 2>&1
if ! have_all; then
  [ "$install" = --install ] || skip "slurmctld/slurmd/munge/slurm-client are not installed (rerun with --install as root)"
  [ "$(id -u)" = 0 ] || skip "installing SLURM needs root"
  command -v apt-get >/dev/null || skip "installing SLURM needs apt-get (Debian/Ubuntu)"
  { timeout 300 apt-get update && DEBIAN_FRONTEND=noninteractive timeout 600 apt-get install -y \
      --no-install-recommends slurmctld slurmd munge slurm-client; } >"$dir/apt.log" 2>&1 || skip "apt-get install failed (see $dir/apt.log)"
fi
[ "$(id -u)" = 0 ] || skip "a local slurmd must run as root (it starts jobs as other users)"
[ -f /etc/munge/munge.key ] || skip "no /etc/munge/munge.key (munge package not configured)"

stop  # a previous run's daemons under the same DIR
node="$(hostname -s)"
cpus="$(nproc)"
mkdir -p "$dir/slurm/state" "$dir/slurm/spool" "$dir/bin"
m="$(mktemp -d /tmp/clrepro-munge.XXXXXX)"
echo "$m" >"$dir/munge_dir"
chmod 755 "$m"
chown munge:munge "$m"
runuser -u munge -- munged --socket="$m/munge.socket.2" --key-file=/etc/munge/munge.key \
  --log-file="$m/munged.log" --pid-file="$m/munged.pid" --seed-file="$m/munged.seed" --force \
  || skip "munged did not start"
munge --socket="$m/munge.socket.2" -n | unmunge --socket="$m/munge.socket.2" >/dev/null \
  || skip "munged does not answer (see $m/munged.log)"

for i in 0 1; do [ -c "$dir/slurm/fakegpu$i" ] || mknod "$dir/slurm/fakegpu$i" c 1 3; done
cat >"$dir/slurm/gres.conf" <<CONF
NodeName=$node Name=gpu File=$dir/slurm/fakegpu[0-1]
CONF
cat >"$dir/slurm/slurm.conf" <<CONF
ClusterName=clreprotest
SlurmctldHost=$node(127.0.0.1)
SlurmctldPort=$ctl_port
SlurmdPort=$d_port
AuthType=auth/munge
AuthInfo=socket=$m/munge.socket.2
CredType=cred/munge
SlurmUser=root
SlurmdUser=root
StateSaveLocation=$dir/slurm/state
SlurmdSpoolDir=$dir/slurm/spool
SlurmctldPidFile=$dir/slurm/slurmctld.pid
SlurmdPidFile=$dir/slurm/slurmd.pid
SlurmctldLogFile=$dir/slurm/slurmctld.log
SlurmdLogFile=$dir/slurm/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
MpiDefault=none
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge=600
SlurmdParameters=config_overrides
GresTypes=gpu
NodeName=$node NodeAddr=127.0.0.1 CPUs=$cpus RealMemory=32000 Gres=gpu:2 State=UNKNOWN
PartitionName=cpu Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName=gpu Nodes=ALL MaxTime=INFINITE State=UP
CONF
printf '#!/bin/sh\nexport SLURM_CONF=%s\nexec %s "$@"\n' "$dir/slurm/slurm.conf" "$(command -v srun)" >"$dir/bin/srun"
chmod +x "$dir/bin/srun"

export SLURM_CONF="$dir/slurm/slurm.conf"
slurmctld -f "$SLURM_CONF" || skip "slurmctld did not start (see $dir/slurm/slurmctld.log)"
slurmd -f "$SLURM_CONF" -N "$node" || { stop; skip "slurmd did not start (see $dir/slurm/slurmd.log)"; }
for _ in $(seq 60); do
  if sinfo -h -o '%t' 2>/dev/null | grep -qx idle; then
    echo "export SLURM_CONF=$SLURM_CONF"
    echo "export PATH=$dir/bin:\$PATH"
    exit 0
  fi
  sleep 0.5
done
stop
skip "the node never became idle (see $dir/slurm/slurmctld.log and slurmd.log)"

#!/usr/bin/env bash
# start-local-slurm.sh - a single-node Slurm (Debian 12: Slurm 22.05) on loopback, for the template's CI tests.
# Root, no systemd: the daemons are started directly and listen on 127.0.0.1 only.
# Idempotent: installs missing packages, rewrites the configs, starts only what is not running.
# Every daemon this script starts is recorded (name and PID) in $SLURM_STARTED (one "name pid" a line), and every
# config file it creates ("file path"), so stop-local-slurm.sh stops exactly those daemons, by PID, removes those
# files, and leaves daemons and files it did not make alone.
#   SLURM_ACCOUNTING=0  no accounting (default): profiles use `slurm-status-command: squeue`
#   SLURM_ACCOUNTING=1  slurmdbd + local MariaDB, so sacct/sacctmgr work (about 7 s more)
#   SLURM_STARTED=FILE  where to record started daemons (default /run/forge-slurm.started)
set -euo pipefail
ACCT=${SLURM_ACCOUNTING:-0}
STARTED=${SLURM_STARTED:-/run/forge-slurm.started}
NODE=$(hostname -s)
NCPU=$(env -u OMP_NUM_THREADS -u OMP_THREAD_LIMIT nproc)  # GNU nproc honors OMP_NUM_THREADS, which the tests set to 1
MEM=$(awk '/MemTotal/{print int($2/1024*0.9)}' /proc/meminfo)   # MiB, below what slurmd -C reports
LOG=/var/log/slurm
export DEBIAN_FRONTEND=noninteractive

alive() { [ -s "$1" ] && kill -0 "$(cat "$1")" 2>/dev/null; }
stop() { if alive "$1"; then local p; p=$(cat "$1"); kill "$p"
         for _ in $(seq 150); do kill -0 "$p" 2>/dev/null || break; sleep 0.2; done; fi
         rm -f "$1"; }
wait_for() { local t=$1; shift
             for _ in $(seq $((t*5))); do "$@" >/dev/null 2>&1 && return 0; sleep 0.2; done
             echo "timed out waiting for: $*" >&2; return 1; }
record() { echo "$1 $(cat "$2")" >>"$STARTED"; }   # record NAME PIDFILE
changed=0
put() { # put FILE MODE CONTENT: write only if different, flag a change; a file made here is recorded ("file PATH")
  # and removed by stop-local-slurm.sh: a slurm.conf left behind with no controller makes every `scontrol` wait 10 s,
  # and Snakemake's Slurm plugin calls `scontrol show config` each time it starts, also for local runs.
  [ -e "$1" ] || echo "file $1" >>"$STARTED"
  if [ ! -f "$1" ] || ! cmp -s <(printf '%s\n' "$3") "$1"; then
    printf '%s\n' "$3" >"$1"; chmod "$2" "$1"; changed=1; fi; }

# 1. packages (--no-install-recommends: the slurm-wlm metapackage drags in ~40 plugin/-dev packages).
#    slurm-wlm-torque: PBS-style qsub/qstat/qdel over Slurm, the stand-in for testing the PBS profile.
pkgs="slurmctld slurmd slurm-client munge slurm-wlm-torque"
[ "$ACCT" = 1 ] && pkgs="$pkgs slurmdbd mariadb-server"
missing=$(for p in $pkgs; do dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"; done)
if [ -n "$missing" ]; then
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# 2. configs. Traps: without DefMemPerCPU every job asks for all the memory and jobs run one at a time;
#    TaskPlugin=task/affinity works without cgroups (no systemd here); MinJobAge must stay well above
#    3 x the plugin's first status check, or the plugin falls back from squeue to sacct.
install -d /etc/slurm /var/lib/slurm/slurmctld /var/lib/slurm/slurmd "$LOG"
if [ "$ACCT" = 1 ]; then
  acct="AccountingStorageType=accounting_storage/slurmdbd
AccountingStorageHost=localhost
AccountingStoragePort=6819
JobAcctGatherType=jobacct_gather/linux"
else
  acct="AccountingStorageType=accounting_storage/none
JobAcctGatherType=jobacct_gather/none"
fi
put /etc/slurm/slurm.conf 644 "ClusterName=localci
SlurmctldHost=$NODE(127.0.0.1)
SlurmUser=root
AuthType=auth/munge
StateSaveLocation=/var/lib/slurm/slurmctld
SlurmdSpoolDir=/var/lib/slurm/slurmd
SlurmctldPidFile=/run/slurmctld.pid
SlurmdPidFile=/run/slurmd.pid
SlurmctldLogFile=$LOG/slurmctld.log
SlurmdLogFile=$LOG/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/affinity
MpiDefault=none
ReturnToService=2
MinJobAge=300
KillWait=30
SchedulerType=sched/backfill
SchedulerParameters=bf_interval=1
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
DefMemPerCPU=1024
$acct
JobCompType=jobcomp/none
NodeName=$NODE NodeAddr=127.0.0.1 CPUs=$NCPU RealMemory=$MEM State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP"

# 3. munge
install -d -o munge -g munge -m 0755 /run/munge
if [ ! -s /etc/munge/munge.key ]; then
  mungekey --create --keyfile=/etc/munge/munge.key
  chown munge:munge /etc/munge/munge.key; chmod 400 /etc/munge/munge.key
fi
if ! alive /run/munge/munged.pid; then
  runuser -u munge -- /usr/sbin/munged; wait_for 10 test -s /run/munge/munged.pid; record munged /run/munge/munged.pid
fi
wait_for 10 bash -c 'munge -n | unmunge'

# 4. accounting: MariaDB (unix socket + 127.0.0.1) and slurmdbd on 127.0.0.1:6819
if [ "$ACCT" = 1 ]; then
  install -d -o mysql -g mysql /run/mysqld
  if ! mariadb-admin ping >/dev/null 2>&1; then
    [ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql >/dev/null
    nohup /usr/sbin/mariadbd --user=mysql --bind-address=127.0.0.1 --pid-file=/run/mysqld/mysqld.pid \
      --innodb-buffer-pool-size=256M --innodb-lock-wait-timeout=900 >"$LOG/mariadb.log" 2>&1 &
    wait_for 60 mariadb-admin ping; wait_for 10 test -s /run/mysqld/mysqld.pid; record mariadbd /run/mysqld/mysqld.pid
  fi
  mariadb -e "CREATE DATABASE IF NOT EXISTS slurm_acct_db;
    CREATE USER IF NOT EXISTS 'slurm'@'localhost' IDENTIFIED BY 'slurm';
    GRANT ALL ON slurm_acct_db.* TO 'slurm'@'localhost';"
  put /etc/slurm/slurmdbd.conf 600 "AuthType=auth/munge
DbdHost=localhost
DbdAddr=127.0.0.1
DbdPort=6819
SlurmUser=root
LogFile=$LOG/slurmdbd.log
PidFile=/run/slurmdbd.pid
StorageType=accounting_storage/mysql
StorageHost=localhost
StorageUser=slurm
StoragePass=slurm
StorageLoc=slurm_acct_db"
  if ! alive /run/slurmdbd.pid; then slurmdbd; wait_for 10 test -s /run/slurmdbd.pid; record slurmdbd /run/slurmdbd.pid; fi
  wait_for 60 sacctmgr -n list cluster
fi

# 5. slurmctld + slurmd (restart both if a config changed)
if [ "$changed" = 1 ]; then stop /run/slurmd.pid; stop /run/slurmctld.pid; fi
if ! alive /run/slurmctld.pid; then slurmctld; wait_for 10 test -s /run/slurmctld.pid; record slurmctld /run/slurmctld.pid; fi
wait_for 30 scontrol ping
if ! alive /run/slurmd.pid; then slurmd -N "$NODE"; wait_for 10 test -s /run/slurmd.pid; record slurmd /run/slurmd.pid; fi
for _ in $(seq 150); do
  st=$(sinfo -h -n "$NODE" -o %T 2>/dev/null || true)
  case "$st" in
    idle|mixed|allocated) break ;;
    down*|drain*|*drain*) scontrol update NodeName="$NODE" State=RESUME 2>/dev/null || true ;;
  esac
  sleep 0.2
done
[ "$ACCT" = 1 ] && wait_for 30 bash -c "sacctmgr -n -P list assoc user=root | grep -q localci"
sinfo

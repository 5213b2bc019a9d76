#!/usr/bin/env bash
# A single-node Ceph cluster with an S3 gateway (radosgw), all state under one
# directory, every address on 127.0.0.1: the real object store of the integration
# tests and of bench/s3.ts. Recipe and gotchas: ../shared/PEERS.md ("single-node Ceph
# with RGW").
#
#   tools/ceph-rgw.sh start DIR      build the cluster in DIR (or restart its stopped
#                                    daemons), wait until S3 answers, write DIR/env
#   tools/ceph-rgw.sh stop DIR       stop radosgw, then OSD and mgr, then mon, by PID
#   tools/ceph-rgw.sh stop-rgw DIR   stop only radosgw (tests: the gateway goes away)
#   tools/ceph-rgw.sh status DIR     exit 0 when every daemon runs and S3 answers
#
# DIR/env holds shell assignments (AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID,
# AWS_SECRET_ACCESS_KEY, AWS_REGION): `set -a; . DIR/env` or parse it.
#
# Every wait is a readiness check polled every 0.1 s with a deadline, never a fixed
# sleep. `start` is idempotent: a running cluster is left alone, a stopped one is
# restarted from its state (data kept), a half-built one is wiped and rebuilt.
set -euo pipefail

die() { echo "ceph-rgw: $*" >&2; exit 1; }
log() { [ -n "${CEPH_RGW_QUIET:-}" ] || echo "ceph-rgw: $*" >&2; }

[ $# -eq 2 ] || die "usage: $0 start|stop|stop-rgw|status DIR"
cmd=$1
if [ ! -d "$2" ]; then
  case $cmd in
    start) mkdir -p "$2" ;;
    stop|stop-rgw) exit 0 ;;   # nothing was ever started there
    *) exit 1 ;;
  esac
fi
DIR=$(cd "$2" && pwd)
CONF=$DIR/ceph.conf
export CEPH_CONF=$CONF
# Daemons in start order; stop walks it backwards (PEERS.md: radosgw first, mon last).
DAEMONS=(mon.a mgr.x osd.0 client.rgw.a)

now_ms() { date +%s%3N; }

# wait_for DEADLINE_S WHAT COMMAND...: polls COMMAND until it succeeds.
wait_for() {
  local limit=$1 what=$2 start
  shift 2
  start=$(now_ms)
  until "$@" >/dev/null 2>&1; do
    [ $(( $(now_ms) - start )) -lt $(( limit * 1000 )) ] || die "$what not ready after ${limit}s (logs in $DIR/log)"
    sleep 0.1
  done
  log "$what ready in $(( $(now_ms) - start )) ms"
}

pid_of() {
  local f=$DIR/run/$1.pid
  [ -s "$f" ] || return 1
  local pid
  pid=$(cat "$f")
  alive "$pid" && echo "$pid"
}

# Zombies count as gone (a reparented daemon may not be reaped at once).
alive() {
  [ -e "/proc/$1" ] || return 1
  local state
  state=$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null) || return 1
  [ "$state" != Z ]
}

stop_daemon() {
  local name=$1 pid start
  pid=$(pid_of "$name") || return 0
  kill -TERM "$pid" 2>/dev/null || return 0
  start=$(now_ms)
  while alive "$pid"; do
    if [ $(( $(now_ms) - start )) -gt 10000 ]; then
      log "$name ($pid) ignored SIGTERM for 10 s: SIGKILL"
      kill -KILL "$pid" 2>/dev/null || true
    fi
    sleep 0.05
  done
  rm -f "$DIR/run/$name.pid"
  log "stopped $name ($pid) in $(( $(now_ms) - start )) ms"
}

stop_all() {
  local i
  for (( i=${#DAEMONS[@]}-1; i>=0; i-- )); do stop_daemon "${DAEMONS[$i]}"; done
}

free_port() {
  node -e 'const s=require("net").createServer();s.listen(0,"127.0.0.1",()=>{console.log(s.address().port);s.close()})'
}

# Starts a daemon (it forks and writes its pid file); its start-up chatter goes to a log.
daemon() { "$@" 2>>"$DIR/log/startup.log" || die "$1 failed to start: $(tail -5 "$DIR/log/startup.log")"; }

# The same without waiting: ceph-mgr and ceph-osd take about 3 s each before they fork,
# time better spent on the next step. `await_launchers` collects their exit statuses.
launchers=()
daemon_bg() {
  "$@" 2>>"$DIR/log/startup.log" &
  launchers+=("$!:$1")
}
await_launchers() {
  local l
  for l in "${launchers[@]}"; do
    wait "${l%%:*}" || die "${l#*:} failed to start: $(tail -5 "$DIR/log/startup.log")"
  done
  launchers=()
}

ceph_q() { timeout 20 ceph --connect-timeout 10 "$@"; }

s3_answers() {
  node -e 'fetch(process.argv[1],{signal:AbortSignal.timeout(2000)}).then(r=>process.exit(r.status<500?0:1),()=>process.exit(1))' "$1"
}

osd_up() { [ "$(ceph_q osd stat -f json | node -e 'let s="";process.stdin.on("data",d=>s+=d).on("end",()=>console.log(JSON.parse(s).num_up_osds))')" = 1 ]; }

write_conf() {
  local fsid=$1 mon_port=$2 rgw_port=$3
  cat >"$CONF" <<EOF
[global]
fsid = $fsid
mon initial members = a
mon host = [v2:127.0.0.1:$mon_port]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
ms bind ipv6 = false
ms bind msgr1 = false
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
osd pool default size = 1
osd pool default min size = 1
mon allow pool size one = true
mon warn on pool no redundancy = false
mon allow pool delete = true
osd crush chooseleaf type = 0
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
mon max pg per osd = 1000
paxos propose interval = 0.1
run dir = $DIR/run
admin socket = $DIR/run/\$name.asok
pid file = $DIR/run/\$name.pid
log file = $DIR/log/\$name.log
crash dir = $DIR/crash
keyring = $DIR/keyring/\$name.keyring
mon data = $DIR/mon/\$cluster-\$id
mgr data = $DIR/mgr/\$cluster-\$id
osd data = $DIR/osd/\$cluster-\$id
rgw data = $DIR/rgw/\$cluster-\$id
osd objectstore = bluestore
bluestore block create = true
bluestore block size = 20G
osd memory target = 1073741824

[client]
admin socket =

[client.rgw.a]
admin socket = $DIR/run/\$name.asok
rgw frontends = beast endpoint=127.0.0.1:$rgw_port
rgw gc obj min wait = 30
rgw gc processor period = 30
rgw enable usage log = false
EOF
}

build() {
  local t0 fsid mon_port rgw_port uuid secret access secret_key
  t0=$(now_ms)
  stop_all
  rm -rf "$DIR"/{ceph.conf,env,built,run,log,crash,keyring,mon,mgr,osd,rgw,tmp}
  mkdir -p "$DIR"/{run,log,crash,keyring,mon/ceph-a,mgr/ceph-x,osd/ceph-0,rgw/ceph-rgw.a,tmp}
  fsid=$(uuidgen)
  mon_port=$(free_port)
  rgw_port=$(free_port)
  write_conf "$fsid" "$mon_port" "$rgw_port"

  ceph-authtool --create-keyring "$DIR/tmp/mon.keyring" --gen-key -n mon. --cap mon 'allow *' >/dev/null
  ceph-authtool --create-keyring "$DIR/keyring/client.admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mds 'allow *' --cap mgr 'allow *' >/dev/null
  ceph-authtool "$DIR/tmp/mon.keyring" --import-keyring "$DIR/keyring/client.admin.keyring" >/dev/null
  monmaptool --create --fsid "$fsid" --addv a "[v2:127.0.0.1:$mon_port]" "$DIR/tmp/monmap" >/dev/null
  ceph-mon --mkfs -i a --monmap "$DIR/tmp/monmap" --keyring "$DIR/tmp/mon.keyring" 2>"$DIR/log/mkfs.log" \
    || die "ceph-mon --mkfs failed: $(cat "$DIR/log/mkfs.log")"
  daemon ceph-mon -i a
  wait_for 30 mon ceph_q mon stat

  # Without pre-created pools radosgw's first requests take seconds each (PEERS.md).
  # One `ceph` call costs about 0.3 s of CLI start-up: the pools are made in parallel.
  local pool pids=()
  for pool in .rgw.root default.rgw.log default.rgw.control default.rgw.meta \
    default.rgw.buckets.index default.rgw.buckets.data default.rgw.buckets.non-ec; do
    { ceph_q osd pool create "$pool" 8 8 && ceph_q osd pool application enable "$pool" rgw; } >/dev/null 2>&1 &
    pids+=($!)
  done

  ceph_q auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' -o "$DIR/keyring/mgr.x.keyring"
  daemon_bg ceph-mgr -i x
  for pool in "${pids[@]}"; do wait "$pool" || die "creating the rgw pools failed"; done

  uuid=$(uuidgen)
  secret=$(ceph-authtool --gen-print-key)
  printf '{"cephx_secret": "%s"}\n' "$secret" >"$DIR/tmp/osd-secret.json"
  [ "$(ceph_q osd new "$uuid" -i "$DIR/tmp/osd-secret.json")" = 0 ] || die "osd new did not return id 0"
  ceph-authtool --create-keyring "$DIR/keyring/osd.0.keyring" --name osd.0 --add-key "$secret" >/dev/null
  ceph-osd -i 0 --mkfs --osd-uuid "$uuid" >/dev/null 2>&1 || die "ceph-osd --mkfs failed (see $DIR/log/osd.0.log)"
  daemon_bg ceph-osd -i 0
  ceph_q auth get-or-create client.rgw.a mon 'allow rw' osd 'allow rwx' mgr 'allow rw' -o "$DIR/keyring/client.rgw.a.keyring"
  wait_for 60 osd osd_up
  await_launchers

  access=$(head -c 15 /dev/urandom | od -An -tx1 | tr -d ' \n' | tr a-f A-F)
  secret_key=$(head -c 30 /dev/urandom | base64 | tr -d '/+=\n' | head -c 40)
  radosgw-admin user create --uid=chunkvault --display-name=chunkvault \
    --access-key="$access" --secret-key="$secret_key" >/dev/null
  daemon radosgw -n client.rgw.a
  wait_for 60 radosgw s3_answers "http://127.0.0.1:$rgw_port/"

  cat >"$DIR/env.tmp" <<EOF
AWS_ENDPOINT_URL=http://127.0.0.1:$rgw_port
AWS_ACCESS_KEY_ID=$access
AWS_SECRET_ACCESS_KEY=$secret_key
AWS_REGION=us-east-1
CEPH_CONF=$CONF
EOF
  mv "$DIR/env.tmp" "$DIR/env"
  touch "$DIR/built"
  log "cluster built in $(( $(now_ms) - t0 )) ms; S3 at http://127.0.0.1:$rgw_port"
}

endpoint() { sed -n 's/^AWS_ENDPOINT_URL=//p' "$DIR/env"; }

# Restarts whatever is not running, in start order, from the existing state.
restart() {
  local t0
  t0=$(now_ms)
  pid_of mon.a >/dev/null || { daemon ceph-mon -i a; wait_for 30 mon ceph_q mon stat; }
  pid_of mgr.x >/dev/null || daemon_bg ceph-mgr -i x
  pid_of osd.0 >/dev/null || { daemon_bg ceph-osd -i 0; wait_for 60 osd osd_up; }
  pid_of client.rgw.a >/dev/null || daemon radosgw -n client.rgw.a
  await_launchers
  wait_for 60 radosgw s3_answers "$(endpoint)/"
  log "cluster running ($(( $(now_ms) - t0 )) ms)"
}

running() {
  local d
  [ -f "$DIR/built" ] || return 1
  for d in "${DAEMONS[@]}"; do pid_of "$d" >/dev/null || return 1; done
  s3_answers "$(endpoint)/"
}

case $cmd in
  start)
    command -v radosgw >/dev/null || die "radosgw missing: apt-get install -y --no-install-recommends ceph-mon ceph-mgr ceph-osd radosgw uuid-runtime"
    if [ -f "$DIR/built" ]; then restart; else build; fi
    ;;
  stop) stop_all ;;
  stop-rgw) stop_daemon client.rgw.a ;;
  status) running ;;
  *) die "unknown command $cmd" ;;
esac

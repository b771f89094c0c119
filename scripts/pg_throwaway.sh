# Source me. Starts a throw-away PostgreSQL cluster on 127.0.0.1 and exports FEDSYNTH_TEST_PG_URL.
# Works as root (runs the server as the 'postgres' user) or as an ordinary user.
pg_throwaway_start() {
  local bindir port
  bindir=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  port=${FEDSYNTH_PG_PORT:-55432}
  PG_TMP=$(mktemp -d /tmp/fedsynth-pg.XXXXXX)
  local as=()
  if [ "$(id -u)" = 0 ]; then chown postgres "$PG_TMP"; as=(runuser -u postgres --); fi
  # set before starting, so that a stop after a failed start (an EXIT trap under set -u) can run
  PG_BINDIR=$bindir
  PG_AS=("${as[@]}")
  "${as[@]}" "$bindir/initdb" -D "$PG_TMP/data" -U fedsynth --auth=trust -E UTF8 >/dev/null
  "${as[@]}" "$bindir/pg_ctl" -D "$PG_TMP/data" -l "$PG_TMP/log" -w \
    -o "-c listen_addresses=127.0.0.1 -p $port -k $PG_TMP -c max_connections=200 -c fsync=off" start >/dev/null
  "${as[@]}" "$bindir/createdb" -h 127.0.0.1 -p "$port" -U fedsynth fedsynth_test
  export FEDSYNTH_TEST_PG_URL="postgresql+psycopg://fedsynth@127.0.0.1:$port/fedsynth_test"
}
pg_throwaway_stop() {
  [ -n "${PG_TMP:-}" ] || return 0
  "${PG_AS[@]}" "$PG_BINDIR/pg_ctl" -D "$PG_TMP/data" -m immediate stop >/dev/null 2>&1 || true
  rm -rf "$PG_TMP"
}

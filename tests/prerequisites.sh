#!/usr/bin/env bash
# What `make test` and `make demo` need from the machine, checked before anything is installed or built:
# the integration tests and the demo start real PostgreSQL and Redis servers, the end-to-end tests build
# and start a control plane (Go, curl, openssl). Names everything missing at once, with the
# command that installs it, and exits 1; prints nothing and exits 0 when all is there.
set -u
missing=() debian=()

# The tests find PostgreSQL where Debian puts it, else on PATH (tests/integration/servers.py).
pg_found() {
  local bin
  for bin in ${POSTGRESQL_BIN_DIRS:-/usr/lib/postgresql/*/bin}; do
    [ -x "$bin/initdb" ] && [ -x "$bin/pg_ctl" ] && return 0
  done
  command -v initdb >/dev/null && command -v pg_ctl >/dev/null
}
pg_found || { missing+=("PostgreSQL (initdb, pg_ctl)"); debian+=(postgresql); }
command -v redis-server >/dev/null || { missing+=("Redis (redis-server)"); debian+=(redis-server); }
for tool in curl openssl; do
  command -v "$tool" >/dev/null || { missing+=("$tool"); debian+=("$tool"); }
done
if ! command -v go >/dev/null; then
  missing+=("Go >= 1.26 (builds the local control plane; https://go.dev/dl, Debian's package is older)")
fi

[ ${#missing[@]} = 0 ] && exit 0
{
  echo "make test / make demo: missing prerequisites:"
  printf '  - %s\n' "${missing[@]}"
  if [ ${#debian[@]} -gt 0 ]; then
    echo "On Debian/Ubuntu, as root: apt-get install -y ${debian[*]}"
  fi
  echo "(the tests start their own servers; none needs to run as a service)"
} >&2
exit 1

#!/usr/bin/env bash
# The Debian package, end to end: build it with cargo-deb (man pages and
# completions from `cargo xtask dist`), install it with apt, check the
# installed binaries, units, man pages and completions, run the installed
# server on a temporary RSH_HOME and one command through the installed
# client, then remove the package and check it is gone.
#
# Needs root (CI runs as root) and a Debian-like system; elsewhere it says
# why it skips. Called by .ci/run after the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
export PATH="$HOME/.cargo/bin:$PATH"

if ! command -v dpkg-deb >/dev/null 2>&1 || ! command -v apt-get >/dev/null 2>&1; then
  echo "== package: not a Debian system, skipped"
  exit 0
fi
if [ "$(id -u)" != 0 ]; then
  echo "== package: installing needs root, skipped"
  exit 0
fi

if ! cargo deb --version >/dev/null 2>&1; then
  echo "== package: cargo install cargo-deb"
  cargo install cargo-deb --locked
fi
if ! command -v dpkg-shlibdeps >/dev/null 2>&1; then
  # cargo-deb computes the package's library dependencies with it.
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq dpkg-dev >/dev/null
fi

echo "== package: cargo xtask dist (man pages, completions)"
cargo xtask dist >/dev/null
echo "== package: cargo deb"
# --strip: the release profile keeps line tables (for profiling); the
# packaged binaries do not need them (44 MB -> 5 MB).
cargo deb --locked --strip
deb=$(ls -t target/debian/rsh_*.deb | head -n 1)
dpkg-deb --contents "$deb"

tmp=$(mktemp -d)
server_pid=""
cleanup() {
  if [ -n "$server_pid" ]; then
    kill -KILL "$server_pid" 2>/dev/null || true
  fi
  rm -rf "$tmp"
}
trap cleanup EXIT

echo "== package: apt-get install ./$deb"
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "./$deb"
# By full path: a `cargo install`ed copy in ~/.cargo/bin must not stand in.
server=/usr/bin/rsh-server
client=/usr/bin/rsh-client
"$server" --version
"$client" --version
for file in /usr/lib/systemd/user/rsh-server.service \
  /usr/lib/systemd/system/rsh-server@.service \
  /usr/share/man/man1/rsh-server.1.gz /usr/share/man/man1/rsh-client.1.gz \
  /usr/share/bash-completion/completions/rsh-client \
  /usr/share/zsh/vendor-completions/_rsh-client \
  /usr/share/fish/vendor_completions.d/rsh-client.fish \
  /usr/share/doc/rsh/README.md /usr/share/doc/rsh/examples/rsh-server.toml; do
  test -e "$file" || { echo "missing after install: $file"; exit 1; }
done
zcat /usr/share/man/man1/rsh-server.1.gz | grep -q 'check\\-config'

if ! command -v systemd-analyze >/dev/null 2>&1; then
  # The units must verify in CI: systemd-analyze comes with Debian's systemd
  # package (installing it needs no running systemd).
  echo "== package: installing systemd for systemd-analyze"
  apt-get update -qq || true
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends systemd >/dev/null || true
fi
if command -v systemd-analyze >/dev/null 2>&1; then
  echo "== package: systemd-analyze verify (installed units)"
  # The Documentation= check needs man-db, not installed on every CI
  # machine; the man pages' presence is checked above.
  man_check=--man=no
  systemd-analyze verify "$man_check" /usr/lib/systemd/system/rsh-server@.service
  cp /usr/lib/systemd/system/rsh-server@.service "$tmp/rsh-server@root.service"
  systemd-analyze verify "$man_check" "$tmp/rsh-server@root.service"
  mkdir -p "$tmp/xdg"
  chmod 700 "$tmp/xdg"
  XDG_RUNTIME_DIR="$tmp/xdg" systemd-analyze --user verify "$man_check" \
    /usr/lib/systemd/user/rsh-server.service
else
  echo "== package: systemd-analyze not installed: units not verified"
fi

# Starting the user unit needs a running systemd and a user manager, which
# CI's container has not; tests/service.rs checks the notify protocol the
# unit relies on against a NOTIFY_SOCKET of its own.
if [ -d /run/systemd/system ]; then
  echo "== package: systemd is running; the unit start is left to a user session"
else
  echo "== package: no systemd running here: units verified, not started"
fi
echo "== package: the installed server and client"
home="$tmp/home"
mkdir -m 700 "$home"
RSH_HOME="$home" "$server" --check-config
RSH_HOME="$home" "$server" --ready-file "$tmp/ready" 2>"$tmp/server.log" &
server_pid=$!
for _ in $(seq 1 300); do
  [ -e "$tmp/ready" ] && break
  kill -0 "$server_pid" 2>/dev/null || { cat "$tmp/server.log"; exit 1; }
  sleep 0.1
done
test -e "$tmp/ready" || { echo "rsh-server not ready in 30 s"; cat "$tmp/server.log"; exit 1; }
out=$(RSH_HOME="$home" "$client" "unix:$home/rsh.sock" -c 'echo installed ok')
test "$out" = "installed ok" || { echo "unexpected output: $out"; exit 1; }
# A reload, then a stop; each logged.
kill -HUP "$server_pid"
for _ in $(seq 1 300); do
  grep -q "reloaded" "$tmp/server.log" && break
  sleep 0.1
done
kill -TERM "$server_pid"
wait "$server_pid"
server_pid=""
grep -q "SIGHUP received" "$tmp/server.log" || { cat "$tmp/server.log"; exit 1; }
grep -q "shutdown complete" "$tmp/server.log"

echo "== package: apt-get remove -y rsh"
DEBIAN_FRONTEND=noninteractive apt-get remove -y -qq rsh
for file in /usr/bin/rsh-server /usr/bin/rsh-client \
  /usr/lib/systemd/user/rsh-server.service /usr/lib/systemd/system/rsh-server@.service \
  /usr/share/man/man1/rsh-server.1.gz; do
  if [ -e "$file" ]; then echo "left after remove: $file"; exit 1; fi
done
if dpkg-query -W -f='${Status}' rsh 2>/dev/null | grep -q "install ok installed"; then
  echo "rsh still installed"
  exit 1
fi
echo "== package: built, installed, exercised and removed"

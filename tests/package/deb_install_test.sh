#!/usr/bin/env bash
# The Debian package, installed on this machine and talked to (cmake/packaging.cmake, packaging/):
#   1. packs the .deb from BUILD_DIR's binaries (cpack -G DEB, into a temp dir; nothing is built);
#   2. installs it with dpkg -i and checks what landed: the four binaries in /usr/bin (each one's
#      --help exits 0 and names it; their man pages, where help2man made them), no
#      tokenwheeld-powercut, the systemd unit (systemd-analyze
#      verify, where present), the conffile, the system user and the data directory;
#   3. runs the unit's ExecStart= command line, read from the installed unit, as the unit's User=
#      with the unit's LimitNOFILE=, plus flags that move it to free loopback ports and a temp
#      data dir (the command line wins over the config file); waits for its start line;
#   4. talks to it: the installed `tokenwheel` CLI creates an activity, issues a task, polls it,
#      succeeds it and describes it; GET /healthz on the gateway answers "ok";
#   5. stops it by PID with SIGTERM and checks it exited 0 with its clean-stop line;
#   6. dpkg -r keeps the conffile and the data; dpkg --purge removes both (and keeps the user).
# A tokenwheel package already installed when the test starts is purged first, and every exit
# path stops the server and purges the package, so that runs are independent.
#
# Usage: deb_install_test.sh BUILD_DIR. Root only (dpkg): otherwise it exits 77, which ctest
# reports as skipped (tests/CMakeLists.txt). CI runs it as root on a disposable machine.
set -euo pipefail

if [ $# -ne 1 ]; then
  echo "usage: $0 BUILD_DIR" >&2
  exit 2
fi
build_dir=$(cd "$1" && pwd)

if [ "$(id -u)" -ne 0 ]; then
  echo "SKIP: deb_install_test needs root: it installs and purges the tokenwheel package with dpkg"
  exit 77
fi

fail() {
  echo "FAIL: $*" >&2
  exit 1
}

for tool in cpack dpkg dpkg-deb dpkg-query setpriv prlimit getent /usr/bin/python3; do
  command -v "$tool" >/dev/null || fail "$tool is missing"
done

# One package test at a time on this machine (dpkg has one database).
exec 9>/run/lock/tokenwheel-deb-install-test.lock
flock -w 300 9 || fail "another deb_install_test held its lock for 300 s"

package_status() {
  dpkg-query -W -f='${db:Status-Status}' tokenwheel 2>/dev/null || echo not-installed
}

purge_package() {
  if [ "$(package_status)" != "not-installed" ]; then
    dpkg --purge tokenwheel >/dev/null
  fi
}

work=$(mktemp -d /tmp/tw-deb-test.XXXXXX)
server_pid=""
log="$work/server.log"
cleanup() {
  local rc=$?
  if [ -n "$server_pid" ] && kill -0 "$server_pid" 2>/dev/null; then
    kill -KILL "$server_pid" 2>/dev/null || true
    wait "$server_pid" 2>/dev/null || true
  fi
  if [ "$rc" -ne 0 ] && [ -s "$log" ]; then
    echo "--- server log" >&2
    tail -n 40 "$log" >&2
  fi
  purge_package || echo "cleanup: dpkg --purge tokenwheel failed" >&2
  rm -rf "$work"
  exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

if [ "$(package_status)" != "not-installed" ]; then
  echo "tokenwheel is installed ($(package_status)): purging it first"
  purge_package
fi

# ---- 1. Pack the build's binaries ----
(cd "$build_dir" && cpack -G DEB -B "$work/pkg" >"$work/cpack.log" 2>&1) ||
  { cat "$work/cpack.log" >&2; fail "cpack -G DEB in $build_dir"; }
debs=("$work"/pkg/tokenwheel_*.deb)
{ [ ${#debs[@]} -eq 1 ] && [ -f "${debs[0]}" ]; } || fail "cpack made no single tokenwheel_*.deb"
deb=${debs[0]}
echo "packed $(basename "$deb") ($(stat -c %s "$deb") bytes)"
[ "$(dpkg-deb -f "$deb" Package)" = tokenwheel ] || fail "package name"
dpkg-deb -f "$deb" Depends | grep -q 'libc6' || fail "Depends lacks dpkg-shlibdeps' libc6"
# A build configured with help2man packs a man page per binary (cmake/packaging.cmake).
if grep -q '^TW_HELP2MAN:FILEPATH=/' "$build_dir/CMakeCache.txt"; then
  contents=$(dpkg-deb -c "$deb")
  for bin in tokenwheeld tokenwheel tokenwheel-crashtest tokenwheel-bench; do
    grep -q " ./usr/share/man/man1/$bin.1.gz\$" <<<"$contents" || fail "no man page for $bin"
  done
fi

# ---- 2. Install and check what landed ----
dpkg -i "$deb" >"$work/dpkg-install.log" 2>&1 ||
  { cat "$work/dpkg-install.log" >&2; fail "dpkg -i $deb"; }
[ "$(package_status)" = installed ] || fail "status after dpkg -i: $(package_status)"

for bin in tokenwheeld tokenwheel tokenwheel-crashtest tokenwheel-bench; do
  path=/usr/bin/$bin
  [ -x "$path" ] || fail "$path is not installed"
  dpkg-query -S "$path" | grep -q '^tokenwheel:' || fail "$path does not belong to the package"
  help=$("$path" --help) || fail "$path --help exited $?"
  case "$help" in
    "$bin: "*) ;;
    *) fail "$path --help does not start with '$bin: ': $(head -n 1 <<<"$help")" ;;
  esac
done
[ ! -e /usr/bin/tokenwheeld-powercut ] || fail "the power-cut build was installed"

unit=/lib/systemd/system/tokenwheel.service
[ -f "$unit" ] || fail "$unit is not installed"
if command -v systemd-analyze >/dev/null; then
  verify=$(systemd-analyze verify "$unit" 2>&1) || fail "systemd-analyze verify $unit: $verify"
  [ -z "$verify" ] || fail "systemd-analyze verify $unit warns: $verify"
fi

conf=/etc/tokenwheel/tokenwheel.json
[ -f "$conf" ] || fail "$conf is not installed"
dpkg-query -W -f='${Conffiles}' tokenwheel | grep -q "^ $conf " || fail "$conf is not a conffile"
/usr/bin/python3 -c 'import json, sys; c = json.load(open(sys.argv[1]));
assert c["data-dir"] == "/var/lib/tokenwheel", c' "$conf" || fail "$conf data-dir"

user=$(sed -n 's/^User=//p' "$unit")
[ "$user" = tokenwheel ] || fail "the unit's User= is '$user', not tokenwheel"
passwd_line=$(getent passwd tokenwheel) || fail "postinst created no user tokenwheel"
IFS=: read -r _ _ uid _ _ home shell <<<"$passwd_line"
getent group tokenwheel >/dev/null || fail "postinst created no group tokenwheel"
[ "$uid" -lt 1000 ] || fail "tokenwheel is not a system user (uid $uid)"
[ "$home" = /var/lib/tokenwheel ] || fail "tokenwheel's home is $home"
[ "$shell" = /usr/sbin/nologin ] || fail "tokenwheel's shell is $shell"
[ "$(stat -c '%U:%G %a' /var/lib/tokenwheel)" = "tokenwheel:tokenwheel 700" ] ||
  fail "/var/lib/tokenwheel is $(stat -c '%U:%G %a' /var/lib/tokenwheel)"

# ---- 3. The unit's command line, as the unit's user ----
mapfile -t exec_lines < <(sed -n 's/^ExecStart=//p' "$unit")
[ ${#exec_lines[@]} -eq 1 ] || fail "the unit has ${#exec_lines[@]} ExecStart= lines"
read -r -a cmd <<<"${exec_lines[0]}"
[ "${cmd[0]}" = /usr/bin/tokenwheeld ] || fail "ExecStart= runs ${cmd[0]}"
nofile=$(sed -n 's/^LimitNOFILE=//p' "$unit")
[[ "$nofile" =~ ^[0-9]+$ ]] || fail "the unit's LimitNOFILE= is '$nofile'"
# engine/limits.h: kRpcConnectionsMax + kAwsConnectionsMax + kAwsRefusalsInProgressMax.
[ "$nofile" -ge $((4096 + 16384 + 64)) ] || fail "LimitNOFILE=$nofile is below the connection caps"
# Where this machine lets even root go no higher (a container), the hard limit it has instead.
if ! (ulimit -n "$nofile") 2>/dev/null; then
  echo "note: cannot raise RLIMIT_NOFILE to $nofile here; the server runs with $(ulimit -Hn)"
  nofile=$(ulimit -Hn)
fi

chmod 0711 "$work"  # the server's user passes through to its own directory
srv="$work/srv"
install -d -m 0700 -o tokenwheel -g tokenwheel "$srv"
prlimit --nofile="$nofile:$nofile" -- \
  setpriv --reuid=tokenwheel --regid=tokenwheel --init-groups --inh-caps=-all -- \
  "${cmd[@]}" --data-dir "$srv/data" --rpc-listen 127.0.0.1:0 --aws-listen 127.0.0.1:0 \
  >"$log" 2>&1 &
server_pid=$!

start_line=""
for _ in $(seq 300); do  # 30 s at most: an ASan build opens its store slowly
  start_line=$(grep -m 1 'started, listening on ' "$log" || true)
  [ -n "$start_line" ] && break
  kill -0 "$server_pid" 2>/dev/null || fail "tokenwheeld exited before its start line"
  sleep 0.1
done
[ -n "$start_line" ] || fail "no start line in 30 s"
echo "server: $start_line"
# Real and effective uid of the server process (ps would print a name this long as a number).
[ "$(awk '/^Uid:/ {print $2 " " $3}' "/proc/$server_pid/status")" = "$uid $uid" ] ||
  fail "the server does not run as tokenwheel (uid $uid)"
rpc=$(sed -n 's/.*started, listening on \([^ ]*\) .*/\1/p' <<<"$start_line")
aws=$(sed -n 's/.* aws_listen=\([^ ]*\) .*/\1/p' <<<"$start_line")
[[ "$rpc" == 127.0.0.1:* ]] || fail "rpc address '$rpc'"
[[ "$aws" == 127.0.0.1:* ]] || fail "gateway address '$aws'"
grep -q " data_dir=$srv/data " <<<"$start_line" || fail "--data-dir did not win over $conf"
grep -q " open_files=$nofile\$" <<<"$start_line" || fail "open_files is not LimitNOFILE=$nofile"
[ -f "$srv/data/token.key" ] || fail "no token.key in the data dir"
[ "$(stat -c %U "$srv/data/token.key")" = tokenwheel ] || fail "token.key is not tokenwheel's"

# ---- 4. Talk to it ----
field() {  # field NAME: that member of the JSON object on stdin
  /usr/bin/python3 -c 'import json, sys; print(json.load(sys.stdin)[sys.argv[1]])' "$1"
}
tw() { /usr/bin/tokenwheel --server "$rpc" "$@"; }

arn=$(tw activity create deb-install-test | field activityArn) || fail "activity create"
[[ "$arn" == arn:aws:states:*:activity:deb-install-test ]] || fail "activity ARN '$arn'"
token=$(tw task issue --activity "$arn" --input '{"n":1}' --timeout 60 | field taskToken) ||
  fail "task issue"
[ -n "$token" ] || fail "task issue gave no token"
polled=$(tw task poll "$arn" --wait 5 --worker deb-test) || fail "task poll"
[ "$(field taskToken <<<"$polled")" = "$token" ] || fail "poll gave another task: $polled"
[ "$(field input <<<"$polled")" = '{"n":1}' ] || fail "poll's input: $polled"
tw task succeed "$token" --output '{"done": true}' >/dev/null || fail "task succeed exited $?"
state=$(tw task describe "$token" | field state) || fail "task describe"
[ "$state" = SUCCEEDED ] || fail "the task is $state after succeed"
# A second completion is refused with a typed error (exit 2), and changes nothing.
if tw task succeed "$token" --output '{}' >"$work/again.json" 2>&1; then
  fail "a second succeed was accepted"
else
  [ $? -eq 2 ] || fail "a second succeed: not a typed error: $(cat "$work/again.json")"
fi

health=$(/usr/bin/python3 - "http://$aws/healthz" <<'EOF'
import json, sys, urllib.request
with urllib.request.urlopen(sys.argv[1], timeout=10) as r:
    assert r.status == 200, r.status
    print(json.load(r)["status"])
EOF
) || fail "GET http://$aws/healthz"
[ "$health" = ok ] || fail "/healthz says $health"
echo "talked to it: $arn, task SUCCEEDED, /healthz ok"

# ---- 5. SIGTERM stops it cleanly ----
kill -TERM "$server_pid"
for _ in $(seq 300); do
  kill -0 "$server_pid" 2>/dev/null || break
  sleep 0.1
done
kill -0 "$server_pid" 2>/dev/null && fail "tokenwheeld still runs 30 s after SIGTERM"
server_rc=0
wait "$server_pid" || server_rc=$?
server_pid=""
[ "$server_rc" -eq 0 ] || fail "tokenwheeld exited $server_rc on SIGTERM"
grep -q 'stopped on SIGTERM' "$log" || fail "no 'stopped on SIGTERM' line"

# ---- 6. Remove keeps config and data; purge removes them ----
marker=/var/lib/tokenwheel/deb-install-test.marker
touch "$marker"
dpkg -r tokenwheel >/dev/null || fail "dpkg -r"
[ "$(package_status)" = config-files ] || fail "status after dpkg -r: $(package_status)"
[ ! -e /usr/bin/tokenwheeld ] || fail "dpkg -r left /usr/bin/tokenwheeld"
[ ! -e "$unit" ] || fail "dpkg -r left $unit"
[ -f "$conf" ] || fail "dpkg -r removed the conffile"
[ -f "$marker" ] || fail "dpkg -r removed the data"
dpkg --purge tokenwheel >/dev/null || fail "dpkg --purge"
[ "$(package_status)" = not-installed ] || fail "status after purge: $(package_status)"
[ ! -e "$conf" ] || fail "purge left $conf"
[ ! -e /var/lib/tokenwheel ] || fail "purge left /var/lib/tokenwheel"
getent passwd tokenwheel >/dev/null || fail "purge removed the system user"
echo "PASS: installed, served, stopped cleanly, removed and purged"

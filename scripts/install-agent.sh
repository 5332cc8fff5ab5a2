#!/bin/sh
# Installs the EdgeFleet agent on a Debian-based device, points it at a console, starts it,
# and waits until the console has answered its enrollment (approved or pending).
#
#   sudo EDGEFLEET_AGENT_TOKEN=ef1.... scripts/install-agent.sh PACKAGE --console mqtt://HOST:1883
#
# PACKAGE  a .deb file, or a version: then <EDGEFLEET_DOWNLOAD_BASE>/edgefleet-agent_<v>_amd64.deb
#          is downloaded when that variable is set, else dist/edgefleet-agent_<v>_amd64.deb of
#          the repository this script is in is used.
# --console URL       the console's MQTT URL (mqtt://HOST:PORT or mqtts://HOST:PORT).
# --token-file FILE   the enrollment token (`edgefleet tokens create`). Or set
#                     EDGEFLEET_AGENT_TOKEN, or pass --token TOKEN (visible in `ps`; avoid).
# --foreground        no systemd (containers, tests): run the agent as user edgefleet with
#                     nohup, pid in /run/edgefleet-agent.pid, log in
#                     /var/lib/edgefleet-agent/agent.log. Chosen by itself without systemd.
# --timeout SECONDS   how long to wait for the console's answer (default 60).
#
# Safe to run again: it reinstalls the package, rewrites the two keys and restarts the
# agent. The token is never printed and never put on a command line.
set -eu

CONF=/etc/edgefleet-agent/agent.toml
DATA=/var/lib/edgefleet-agent
PIDFILE=/run/edgefleet-agent.pid
AGENT=/usr/bin/edgefleet-agent

say() { printf 'install-agent: %s\n' "$*"; }
die() { printf 'install-agent: error: %s\n' "$*" >&2; exit 1; }

usage() {
    sed -n '2,19p' "$0" | sed 's/^# \{0,1\}//' >&2
    exit 2
}

package=""
console=""
token="${EDGEFLEET_AGENT_TOKEN:-}"
unset EDGEFLEET_AGENT_TOKEN
foreground=""
timeout=60
while [ $# -gt 0 ]; do
    case "$1" in
    --console) [ $# -ge 2 ] || die "--console needs a URL"; console=$2; shift 2 ;;
    --token) [ $# -ge 2 ] || die "--token needs a value"; token=$2; shift 2 ;;
    --token-file)
        [ $# -ge 2 ] || die "--token-file needs a file"
        [ -r "$2" ] || die "cannot read the token file $2"
        token=$(tr -d ' \t\r\n' <"$2"); shift 2 ;;
    --foreground) foreground=yes; shift ;;
    --timeout) [ $# -ge 2 ] || die "--timeout needs seconds"; timeout=$2; shift 2 ;;
    -h|--help) usage ;;
    -*) die "unknown option $1 (see --help)" ;;
    *) [ -z "$package" ] || die "one package only (got $package and $1)"; package=$1; shift ;;
    esac
done

[ -n "$package" ] || die "no package: give a .deb file or a version (see --help)"
[ -n "$console" ] || die "no console: pass --console mqtt://HOST:1883"
[ -n "$token" ] || die "no enrollment token: use --token-file FILE or EDGEFLEET_AGENT_TOKEN"
case "$console" in mqtt://*|mqtts://*) ;; *) die "--console must be mqtt://HOST:PORT or mqtts://HOST:PORT (got $console)" ;; esac
case "$timeout" in ''|*[!0-9]*) die "--timeout must be a number of seconds" ;; esac
[ "$(id -u)" -eq 0 ] || die "run as root (it installs a package)"
if [ -z "$foreground" ] && [ ! -d /run/systemd/system ]; then
    say "systemd is not running here: starting the agent in the foreground mode"
    foreground=yes
fi

# 1. The package.
tmpdir=$(mktemp -d)
trap 'rm -rf "$tmpdir"' EXIT
if [ -f "$package" ]; then
    deb=$package
else
    case "$package" in
    *.deb) die "no such file: $package" ;;
    esac
    name="edgefleet-agent_${package}_amd64.deb"
    if [ -n "${EDGEFLEET_DOWNLOAD_BASE:-}" ]; then
        say "downloading ${EDGEFLEET_DOWNLOAD_BASE%/}/$name"
        curl -fsSL --retry 3 -o "$tmpdir/$name" "${EDGEFLEET_DOWNLOAD_BASE%/}/$name" ||
            die "download of $name failed"
        deb=$tmpdir/$name
    else
        deb="$(cd "$(dirname "$0")/.." && pwd)/dist/$name"
        [ -f "$deb" ] || die "$deb does not exist (build it with cargo xtask dist, or set EDGEFLEET_DOWNLOAD_BASE)"
    fi
fi
say "installing $deb"
# Keep the admin's edited config on upgrade (conffile), never prompt.
DEBIAN_FRONTEND=noninteractive dpkg --force-confdef --force-confold -i "$deb" </dev/null ||
    die "dpkg could not install $deb"

# 2. The config: two keys, validated by the agent's own loader, comments kept.
say "pointing the agent at $console"
"$AGENT" config set --config "$CONF" console_urls "$console" >"$tmpdir/set.log" 2>&1 ||
    die "cannot set console_urls: $(cat "$tmpdir/set.log")"
printf '%s' "$token" | "$AGENT" config set --config "$CONF" token - >"$tmpdir/set.log" 2>&1 ||
    die "cannot set the token: $(cat "$tmpdir/set.log")"

# A refusal from an earlier attempt must not answer for this one; status.json is rewritten
# by the agent we start, so a stale one is removed too.
if grep -q '"rejected"' "$DATA/enrollment.json" 2>/dev/null; then
    rm -f "$DATA/enrollment.json"
fi
rm -f "$DATA/status.json"

# 3. Start (or restart).
if [ -n "$foreground" ]; then
    if [ -f "$PIDFILE" ] && kill -0 "$(cat "$PIDFILE")" 2>/dev/null; then
        say "stopping the agent started earlier (pid $(cat "$PIDFILE"))"
        kill "$(cat "$PIDFILE")"
        i=0
        while kill -0 "$(cat "$PIDFILE")" 2>/dev/null && [ $i -lt 50 ]; do sleep 0.1; i=$((i + 1)); done
    fi
    say "starting the agent in the foreground mode (log: $DATA/agent.log)"
    cd /
    nohup setpriv --reuid=edgefleet --regid=edgefleet --init-groups \
        "$AGENT" run --config "$CONF" >>"$DATA/agent.log" 2>&1 </dev/null &
    echo $! >"$PIDFILE"
    alive() { kill -0 "$(cat "$PIDFILE")" 2>/dev/null; }
    logs() { tail -n 20 "$DATA/agent.log" >&2; }
else
    say "starting edgefleet-agent.service"
    systemctl enable --quiet edgefleet-agent.service
    systemctl restart edgefleet-agent.service || die "systemctl restart failed; see journalctl -u edgefleet-agent"
    alive() {
        state=$(systemctl is-active edgefleet-agent.service || true)
        [ "$state" = active ] || [ "$state" = activating ]
    }
    logs() { journalctl -u edgefleet-agent.service -n 20 --no-pager >&2 || true; }
fi

# 4. Wait for the console's answer.
say "waiting up to ${timeout}s for the console to answer the enrollment"
waited=0
while :; do
    if ! alive; then
        logs
        die "the agent stopped (its last log lines are above)"
    fi
    report=$("$AGENT" status --config "$CONF" 2>/dev/null || true)
    enrollment=$(printf '%s\n' "$report" | sed -n 's/^enrollment: *//p')
    connected=$(printf '%s\n' "$report" | sed -n 's/^connected: *//p')
    agent_id=$(printf '%s\n' "$report" | sed -n 's/^agent id: *//p')
    case "$connected/$enrollment" in
    true/approved)
        say "agent $agent_id is enrolled and approved; it is online in the console"
        exit 0 ;;
    true/pending)
        say "agent $agent_id is enrolled and pending: approve it in the console (edgefleet agents approve $agent_id)"
        exit 0 ;;
    */rejected*)
        die "the console refused agent $agent_id: ${enrollment#rejected}" ;;
    esac
    if [ "$waited" -ge "$timeout" ]; then
        logs
        die "no answer from the console within ${timeout}s (connected: ${connected:-unknown}, enrollment: ${enrollment:-unknown})"
    fi
    sleep 1
    waited=$((waited + 1))
done

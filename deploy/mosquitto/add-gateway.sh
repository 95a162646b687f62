#!/bin/sh
# Add (or re-key) one farm gateway's MQTT account: user "<farm>/<gateway>".
#
#   deploy/mosquitto/add-gateway.sh FARM GATEWAY [PASSWORD_FILE]
#
# The password is read from $NAMAZU_GATEWAY_PASSWORD, or generated (32 random bytes,
# base64) and printed once, for the gateway's NAMAZU_MQTT__PASSWORD.
# The ACL's pattern rules then confine the account to namazu/v1/FARM/GATEWAY/...
# Mosquitto re-reads the password file on SIGHUP (done here when it runs under systemd).
set -eu

usage() {
    echo "usage: $0 FARM GATEWAY [PASSWORD_FILE]" >&2
    exit 2
}

[ $# -ge 2 ] && [ $# -le 3 ] || usage
farm=$1
gateway=$2
passwd_file=${3:-/etc/mosquitto/namazu/passwd}

# Topic segments follow the contract ^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$.
valid_segment() {
    printf '%s' "$1" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$'
}
valid_segment "$farm" || { echo "$0: farm id '$farm' is not a valid topic segment" >&2; exit 2; }
valid_segment "$gateway" || {
    echo "$0: gateway id '$gateway' is not a valid topic segment" >&2
    exit 2
}
# Reserved names would let a gateway account reach server topics.
case "$farm" in
    deadletter) echo "$0: farm id 'deadletter' is reserved" >&2; exit 2 ;;
esac
case "$gateway" in
    alarms) echo "$0: gateway id 'alarms' is reserved" >&2; exit 2 ;;
esac

command -v mosquitto_passwd >/dev/null 2>&1 || {
    echo "$0: mosquitto_passwd not found (apt-get install mosquitto)" >&2
    exit 1
}

password=${NAMAZU_GATEWAY_PASSWORD:-}
generated=0
if [ -z "$password" ]; then
    password=$(head -c 32 /dev/urandom | base64 | tr -d '\n')
    generated=1
fi

if [ ! -e "$passwd_file" ]; then
    umask 077
    mkdir -p "$(dirname "$passwd_file")"
    : > "$passwd_file"
fi
mosquitto_passwd -b "$passwd_file" "$farm/$gateway" "$password"

if command -v systemctl >/dev/null 2>&1 && systemctl is-active --quiet mosquitto 2>/dev/null; then
    systemctl reload mosquitto || systemctl kill -s HUP mosquitto
fi

echo "added MQTT account '$farm/$gateway' to $passwd_file"
if [ "$generated" = 1 ]; then
    echo "password (set NAMAZU_MQTT__PASSWORD on the gateway; shown only once):"
    echo "$password"
fi

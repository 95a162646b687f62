#!/bin/sh
# Install the Namazu bridge on a Raspberry-Pi-class farm gateway (Debian/Raspberry Pi
# OS 12, arm64 or armhf, run as root):
#
#   sudo sh deploy/gateway/install-gateway.sh FARM GATEWAY BROKER_HOST [CA_FILE]
#
# FARM/GATEWAY must match the MQTT account made on the server with
# deploy/mosquitto/add-gateway.sh FARM GATEWAY; its password is asked for here (or
# taken from $NAMAZU_MQTT__PASSWORD) and stored in /etc/namazu/namazu.env (0640).
# Re-running is safe: it upgrades the package and keeps the spool and the secrets.
set -eu

usage() {
    echo "usage: $0 FARM GATEWAY BROKER_HOST [CA_FILE]" >&2
    exit 2
}
[ $# -ge 3 ] && [ $# -le 4 ] || usage
farm=$1
gateway=$2
broker=$3
ca_file=${4:-}

[ "$(id -u)" = 0 ] || { echo "$0: run as root" >&2; exit 1; }
for segment in "$farm" "$gateway"; do
    printf '%s' "$segment" | grep -Eq '^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$' || {
        echo "$0: '$segment' is not a valid topic segment" >&2
        exit 2
    }
done

src=$(cd "$(dirname "$0")/../.." && pwd)
prefix=/opt/namazu
etc=/etc/namazu
state=/var/lib/namazu

echo "== packages"
apt-get update -qq
DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3 python3-venv ca-certificates \
    chrony
# The gateway stamps every sample with its clock: keep it disciplined (chrony/NTP).
systemctl enable --now chrony >/dev/null 2>&1 || true

echo "== user and directories"
id namazu >/dev/null 2>&1 || useradd --system --home-dir "$state" --shell /usr/sbin/nologin \
    --groups dialout namazu
install -d -o namazu -g namazu -m 0750 "$state"
install -d -o root -g namazu -m 0750 "$etc"

echo "== application ($src -> $prefix)"
install -d -m 0755 "$prefix"
[ -x "$prefix/venv/bin/python" ] || python3 -m venv "$prefix/venv"
"$prefix/venv/bin/pip" install -q --upgrade pip
# The core only: what the bridge needs (no server extra), at the pinned versions.
"$prefix/venv/bin/pip" install -q -c "$src/constraints.txt" "$src"
install -d -m 0755 "$prefix/docs"
install -m 0644 "$src/docs/deployment.md" "$prefix/docs/deployment.md"

echo "== configuration"
if [ ! -e "$etc/namazu.toml" ]; then
    tls=false
    port=1883
    ca_line='# ca_file = ""'
    if [ -n "$ca_file" ]; then
        install -o root -g namazu -m 0640 "$ca_file" "$etc/mqtt-ca.crt"
        tls=true
        port=8883
        ca_line="ca_file = \"$etc/mqtt-ca.crt\""
    fi
    cat > "$etc/namazu.toml" <<TOML
# Gateway configuration written by install-gateway.sh; reference: docs/CONFIG.md.
[mqtt]
host = "$broker"
port = $port
username = "$farm/$gateway"
tls = $tls
$ca_line
client_id = "namazu-bridge-$farm-$gateway"

[bridge]
farm = "$farm"
gateway = "$gateway"
spool_path = "$state/spool.sqlite"
source = "serial:///dev/ttyUSB0"
TOML
    chown root:namazu "$etc/namazu.toml"
    chmod 0640 "$etc/namazu.toml"
fi
if [ ! -e "$etc/namazu.env" ]; then
    password=${NAMAZU_MQTT__PASSWORD:-}
    if [ -z "$password" ]; then
        printf 'MQTT password for %s/%s: ' "$farm" "$gateway"
        stty -echo 2>/dev/null || true
        read -r password
        stty echo 2>/dev/null || true
        echo
    fi
    umask 027
    printf 'NAMAZU_MQTT__PASSWORD=%s\n' "$password" > "$etc/namazu.env"
    chown root:namazu "$etc/namazu.env"
fi
NAMAZU_CONFIG="$etc/namazu.toml" "$prefix/venv/bin/namazu" check-config --quiet

echo "== service"
install -m 0644 "$src/deploy/systemd/namazu-bridge.service" /etc/systemd/system/
systemctl daemon-reload
systemctl enable namazu-bridge.service
systemctl restart namazu-bridge.service
systemctl --no-pager --lines=5 status namazu-bridge.service || true
echo "gateway $farm/$gateway installed; logs: journalctl -u namazu-bridge -f"

#!/bin/sh
# Install venue-gateway from this source tree on a Debian-based box (Raspberry Pi OS, Debian, Ubuntu):
# a virtual environment in $PREFIX, the configuration in $ETC, the systemd unit, and the system user.
# Run as root on the box (or inside a chroot of a mounted Raspberry Pi OS image):
#   sudo image-build/install.sh                 # install and enable; start it once the tokens are in place
#   PREFIX=/tmp/vg ETC=/tmp/vg/etc SYSTEMD=no image-build/install.sh   # a trial install without systemd
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/venue-gateway}
ETC=${ETC:-/etc/venue-gateway}
PYTHON=${PYTHON:-python3}
SYSTEMD=${SYSTEMD:-yes}

say() { printf 'install: %s\n' "$*"; }

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
say "virtual environment in $PREFIX"
"$PYTHON" -m venv "$PREFIX"
"$PREFIX/bin/pip" install -q --upgrade pip
"$PREFIX/bin/pip" install -q "$src"
mkdir -p "$PREFIX/share" "$PREFIX/models"
cp "$src/README.md" "$PREFIX/share/README.md"
# The shipped models and their cards; a venue replaces a model by renaming a new file over it (hot-reloaded).
cp "$src"/models/*.onnx "$src"/models/*.md "$PREFIX/models/"

mkdir -p "$ETC/tokens"
chmod 0750 "$ETC/tokens"
if [ -e "$ETC/gateway.toml" ]; then
  say "keeping the existing $ETC/gateway.toml"
else
  cp "$src/config/venue.example.toml" "$ETC/gateway.toml"
  say "wrote $ETC/gateway.toml from the example: edit it, then: $PREFIX/bin/venue-gateway check-config $ETC/gateway.toml"
fi

if [ "$SYSTEMD" = yes ]; then
  getent passwd venue-gateway >/dev/null || useradd --system --home-dir /var/lib/venue-gateway --shell /usr/sbin/nologin \
    --user-group venue-gateway
  chgrp venue-gateway "$ETC/tokens"
  install -m 0644 "$src/systemd/venue-gateway.service" /etc/systemd/system/venue-gateway.service
  systemctl daemon-reload
  systemctl enable venue-gateway.service
  say "enabled venue-gateway.service: put the tokens in $ETC/tokens/, then: systemctl start venue-gateway"
fi
"$PREFIX/bin/venue-gateway" --version

#!/bin/sh
# Install venue-gateway from this source tree on a Debian-based box (Raspberry Pi OS, Debian, Ubuntu):
# a virtual environment in $PREFIX from the lock file of the box's Python and architecture (every package pinned,
# every wheel checked against its hash: nothing is resolved at install time), the configuration in $ETC (readable by
# the gateway's group alone), the systemd unit, and the system user.
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
# image-build/requirements-cp311-aarch64.txt and the like, written by `make lock`.
tag=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')-$(uname -m)
LOCK=${LOCK:-$src/image-build/requirements-$tag.txt}
if [ ! -f "$LOCK" ]; then
  say "no lock file for $tag ($LOCK); there are: $(cd "$src/image-build" && ls requirements-*.txt | tr '\n' ' ')" >&2
  say "lock this Python and architecture first (image-build/lock.py), or give LOCK=FILE" >&2
  exit 1
fi

# The code and the models: readable by the service's user, writable by root alone.
umask 022
say "virtual environment in $PREFIX from $(basename "$LOCK")"
"$PYTHON" -m venv "$PREFIX"
# pip first, by its hash: the one a venv starts with (Python's bundled copy) is older and several times slower. Then
# every package by its hash, wheels only; then the project itself, built by the locked setuptools and installed
# without resolving anything more.
pip_pin=$(mktemp)
trap 'rm -f "$pip_pin"' EXIT
sed -n '/^pip==/{N;p;}' "$LOCK" >"$pip_pin"
"$PREFIX/bin/pip" install -q --require-hashes --only-binary=:all: -r "$pip_pin"
"$PREFIX/bin/pip" install -q --require-hashes --only-binary=:all: -r "$LOCK"
"$PREFIX/bin/pip" install -q --no-deps --no-build-isolation "$src"
mkdir -p "$PREFIX/share" "$PREFIX/models"
cp "$src/README.md" "$PREFIX/share/README.md"
# The shipped models and their cards; a venue replaces a model by renaming a new file over it (hot-reloaded).
cp "$src"/models/*.onnx "$src"/models/*.md "$PREFIX/models/"

# The configuration and its secrets: no one but root and the gateway's group reads them (0750 directories, 0640
# files; the EnvironmentFile 0600, read by systemd as root). The gateway refuses a secret file other users may read.
umask 077
mkdir -p "$ETC/tokens"
if [ -e "$ETC/gateway.toml" ]; then
  say "keeping the existing $ETC/gateway.toml"
else
  cp "$src/config/venue.example.toml" "$ETC/gateway.toml"
  say "wrote $ETC/gateway.toml from the example: edit it, then: $PREFIX/bin/venue-gateway check-config $ETC/gateway.toml"
fi
chmod 0750 "$ETC" "$ETC/tokens"
find "$ETC" -type f ! -name environment -exec chmod 0640 {} +
if [ -e "$ETC/environment" ]; then chmod 0600 "$ETC/environment"; fi

if [ "$SYSTEMD" = yes ]; then
  getent passwd venue-gateway >/dev/null || useradd --system --home-dir /var/lib/venue-gateway --shell /usr/sbin/nologin \
    --user-group venue-gateway
  find "$ETC" ! -name environment -exec chown root:venue-gateway {} +
  if [ -e "$ETC/environment" ]; then chown root:root "$ETC/environment"; fi
  install -m 0644 "$src/systemd/venue-gateway.service" /etc/systemd/system/venue-gateway.service
  # Only on a running systemd: in a chroot or an image there is nothing to reload, and `enable` works offline.
  if [ -d /run/systemd/system ]; then systemctl daemon-reload; fi
  # time-sync.target, which the unit starts after, waits for the kernel's clock to be synchronised (NTP, by
  # systemd-timesyncd or chrony) only with systemd-time-wait-sync enabled: the wristband radio must not start on a
  # clock left at the last shutdown. A box with no time source waits until it has one (see the README).
  systemctl enable systemd-time-wait-sync.service venue-gateway.service
  say "enabled venue-gateway.service: put the tokens in $ETC/tokens/ (mode 0640, group venue-gateway), then:" \
    "systemctl start venue-gateway"
fi
"$PREFIX/bin/venue-gateway" --version

#!/bin/sh
# Install venue-gateway from this source tree on a Debian-based box (Raspberry Pi OS, Debian, Ubuntu): a version of
# it beside the ones already there, the configuration in $ETC (readable by the gateway's group alone), the systemd
# unit written with these paths, and the system user and groups the unit names.
#   $PREFIX/versions/<label>/   one whole version: a virtual environment from the lock file of the box's Python and
#                               architecture (every package pinned, every wheel checked against its hash: nothing is
#                               resolved at install time), with share/README.md and models/ (the shipped models)
#   $PREFIX/current             -> versions/<label>, the version the unit runs, switched atomically
#   $PREFIX/previous            -> the version before, for a rollback
# <label> is the project's version and 12 hex of the content it is built from (LABEL=... names it otherwise).
# Running it again upgrades the box: the configuration and the state (/var/lib/venue-gateway) are kept, a running
# service is restarted onto the new version, and versions older than the previous one are removed.
# Run as root on the box, or inside a chroot of the image's root (there, nothing asks a running systemd):
#   sudo image-build/install.sh                 # install and enable; start it once the tokens are in place
#   sudo PREFIX=/srv/vg ETC=/srv/vg-etc image-build/install.sh        # the same, elsewhere: the unit names these
#   PREFIX=/tmp/vg ETC=/tmp/vg/etc SYSTEMD=no image-build/install.sh   # a trial install without systemd
set -eu

src=$(cd "$(dirname "$0")/.." && pwd)
PREFIX=${PREFIX:-/opt/venue-gateway}
ETC=${ETC:-/etc/venue-gateway}
PYTHON=${PYTHON:-python3}
SYSTEMD=${SYSTEMD:-yes}
unit=/etc/systemd/system/venue-gateway.service

say() { printf 'install: %s\n' "$*"; }
fail() { say "$*" >&2; exit 1; }

# The unit names both paths as they are: absolute, and nothing systemd or sed would read as more than a path.
for dir in "$PREFIX" "$ETC"; do
  case $dir in /*) ;; *) fail "PREFIX and ETC are absolute paths, not $dir" ;; esac
  case $dir in *[!A-Za-z0-9/._-]*) fail "PREFIX and ETC hold only letters, digits and / . _ -, not $dir" ;; esac
  # The unit's sandbox gives the service a private /tmp and /var/tmp and no home directories.
  case $SYSTEMD:$dir/ in
    yes:/tmp/* | yes:/var/tmp/* | yes:/home/* | yes:/root/* | yes:/run/user/*)
      fail "the service cannot see $dir (PrivateTmp=yes, ProtectHome=yes in the unit): install elsewhere" ;;
  esac
done

# The trusted-key loader reads NAME.pub files alone: another name would be copied and never trusted.
case ${UPDATE_KEY:-x.pub} in
  *.pub) ;;
  *) fail "UPDATE_KEY names a public key, NAME.pub (from venue-gateway bundle-keygen), not $UPDATE_KEY" ;;
esac

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "Python 3.11 or newer is needed")'
# image-build/requirements-cp311-aarch64.txt and the like, written by `make lock`.
tag=$("$PYTHON" -c 'import sys; print("cp%d%d" % sys.version_info[:2])')-$(uname -m)
LOCK=${LOCK:-$src/image-build/requirements-$tag.txt}
if [ ! -f "$LOCK" ]; then
  say "no lock file for $tag ($LOCK); there are: $(cd "$src/image-build" && ls requirements-*.txt | tr '\n' ' ')" >&2
  fail "lock this Python and architecture first (image-build/lock.py), or give LOCK=FILE"
fi

# The project's version and 12 hex of what a version is built from: the project, its packages, the models, the
# README and the lock file (gateway/update/build.py computes the same for a bundle).
label=$("$PYTHON" - "$src" "$LOCK" <<'PY'
import hashlib, sys, tomllib
from pathlib import Path
src, lock = Path(sys.argv[1]), Path(sys.argv[2])
files = {"lock": lock}
for pattern in ("pyproject.toml", "README.md", "models/*.onnx", "models/*.md", "gateway/**/*", "drivers/**/*"):
    files |= {p.relative_to(src).as_posix(): p for p in src.glob(pattern)
              if p.is_file() and "__pycache__" not in p.parts}
digest = hashlib.sha256()
for name in sorted(files):
    digest.update(f"{name}\0{hashlib.sha256(files[name].read_bytes()).hexdigest()}\n".encode())
version = tomllib.loads((src / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
print(f"{version}-{digest.hexdigest()[:12]}")
PY
)
LABEL=${LABEL:-$label}
case $LABEL in
  [A-Za-z0-9]*) ;;
  *) fail "a label starts with a letter or a digit, not '$LABEL'" ;;
esac
case $LABEL in *[!A-Za-z0-9._+-]*) fail "a label holds only letters, digits and . _ + -, not '$LABEL'" ;; esac

# The code and the models: readable by the service's user, writable by root alone.
umask 022
versions=$PREFIX/versions
target=$versions/$LABEL
build=$versions/.build-$LABEL
mkdir -p "$versions"
was=$(readlink "$PREFIX/current" || true)
if [ "$was" = "versions/$LABEL" ]; then
  say "version $LABEL is installed and current: keeping it"
elif [ -n "$was" ] && [ "$(readlink "$PREFIX/previous" || true)" = "versions/$LABEL" ] && [ -d "$target" ] &&
  [ ! -L "$target" ] && [ -x "$target/bin/venue-gateway" ]; then
  # The previous version, whole (a rollback's target, which ran healthy): switched back to as it is, never removed
  # first, so that an install stopped here still leaves it there.
  say "version $LABEL is installed as the previous version: switching back to it"
  ln -sfn "$was" "$PREFIX/.previous.new"
  mv -T "$PREFIX/.previous.new" "$PREFIX/previous"
  ln -sfn "versions/$LABEL" "$PREFIX/.current.new"
  mv -T "$PREFIX/.current.new" "$PREFIX/current"
  sync
  say "current is $LABEL, previous ${was#versions/}"
else
  # A version appears whole, by a rename: it is built in versions/.build-<label> (what an interrupted install
  # leaves, removed here or by `venue-gateway update`), through versions/<label> as a link to it, so that its
  # scripts name the final path (a virtual environment is not relocatable). What is at versions/<label> now is not
  # the current version nor a whole previous one: a stale one, or what an interrupted install left, built again.
  rm -rf "$build" "$target"
  say "version $LABEL in $target from $(basename "$LOCK")"
  "$PYTHON" -m venv --without-pip "$build"
  ln -s ".build-$LABEL" "$target"
  "$target/bin/python" -m ensurepip --upgrade --default-pip >/dev/null
  # pip first, by its hash: the one a venv starts with (Python's bundled copy) is older and several times slower.
  # Then every package by its hash, wheels only; then the project itself, built by the locked setuptools and
  # installed without resolving anything more.
  pip_pin=$(mktemp)
  trap 'rm -f "$pip_pin"' EXIT
  sed -n '/^pip==/{N;p;}' "$LOCK" >"$pip_pin"
  pip_install() { "$target/bin/python" -m pip install -q "$@"; }
  pip_install --require-hashes --only-binary=:all: -r "$pip_pin"
  pip_install --require-hashes --only-binary=:all: -r "$LOCK"
  pip_install --no-deps --no-build-isolation "$src"
  mkdir -p "$build/share" "$build/models"
  cp "$src/README.md" "$build/share/README.md"
  # The shipped models and their cards, which change with the version. A venue's own model lives outside $PREFIX
  # (in $ETC, say), named by the config, and is hot-reloaded when a new file is renamed over it.
  cp "$src"/models/*.onnx "$src"/models/*.md "$build/models/"
  # The activation scripts name the directory the environment was made in.
  sed -i "s|$build|$target|g" "$build"/bin/activate*
  rm "$target"
  mv -T "$build" "$target"
  # The switch: previous first, then current, each a new relative link renamed over the old one, so that an install
  # stopped at any point leaves current naming one whole version.
  if [ -n "$was" ]; then
    ln -sfn "$was" "$PREFIX/.previous.new"
    mv -T "$PREFIX/.previous.new" "$PREFIX/previous"
  fi
  ln -sfn "versions/$LABEL" "$PREFIX/.current.new"
  mv -T "$PREFIX/.current.new" "$PREFIX/current"
  sync
  say "current is $LABEL${was:+, previous ${was#versions/}}"
fi
# Only the current and the previous version are kept; one goes by a rename out of versions/, then is deleted.
keep_previous=$(readlink "$PREFIX/previous" || true)
for old in "$versions"/*; do
  case $old in
    "$target" | "$PREFIX/$keep_previous" | "$versions/*") ;;
    *)
      mv -T "$old" "$versions/.trash-${old##*/}"
      rm -rf "$versions/.trash-${old##*/}"
      say "removed the older version ${old##*/}"
      ;;
  esac
done
# A box installed before versions/ had its virtual environment in $PREFIX itself (a models/ there is left as it
# was: a config of that box may name it).
if [ -f "$PREFIX/pyvenv.cfg" ]; then
  rm -rf "$PREFIX/bin" "$PREFIX/include" "$PREFIX/lib" "$PREFIX/lib64" "$PREFIX/share" "$PREFIX/pyvenv.cfg"
  say "removed the virtual environment of the earlier layout from $PREFIX"
fi

# The configuration and its secrets: no one but root and the gateway's group reads them (0750 directories, 0640
# files; the EnvironmentFile 0600, read by systemd as root). The gateway refuses a secret file other users may read.
umask 077
mkdir -p "$ETC/tokens"
if [ -e "$ETC/gateway.toml" ]; then
  say "keeping the existing $ETC/gateway.toml"
else
  sed "s|/opt/venue-gateway/|$PREFIX/|g" "$src/config/venue.example.toml" >"$ETC/gateway.toml"
  say "wrote $ETC/gateway.toml from the example: edit it, then:" \
    "$PREFIX/current/bin/venue-gateway check-config $ETC/gateway.toml"
fi
# The public keys whose signed bundles `venue-gateway update` installs (docs/updates.md); UPDATE_KEY=FILE.pub adds one.
mkdir -p "$ETC/update-keys"
if [ -n "${UPDATE_KEY:-}" ]; then
  cp "$UPDATE_KEY" "$ETC/update-keys/$(basename "$UPDATE_KEY")"
  say "trusting update key $(basename "$UPDATE_KEY")"
fi
chmod 0750 "$ETC" "$ETC/tokens" "$ETC/update-keys"
find "$ETC" -type f ! -name environment -exec chmod 0640 {} +
if [ -e "$ETC/environment" ]; then chmod 0600 "$ETC/environment"; fi

if [ "$SYSTEMD" = yes ]; then
  umask 022
  # The groups the unit names (dialout: serial adapters; bluetooth: BlueZ's D-Bus policy grants its group): a group
  # that does not exist would stop the unit at start. bluez's own install keeps a bluetooth group it finds.
  for group in $(sed -n 's/^SupplementaryGroups=//p' "$src/systemd/venue-gateway.service"); do
    getent group "$group" >/dev/null || { groupadd --system "$group" && say "created the system group $group"; }
  done
  getent passwd venue-gateway >/dev/null || useradd --system --home-dir /var/lib/venue-gateway --shell /usr/sbin/nologin \
    --user-group venue-gateway
  find "$ETC" ! -name environment -exec chown root:venue-gateway {} +
  # The updater's state and the store's backups (docs/updates.md): root's alone, never in the service's
  # StateDirectory, where the service's user could rearrange them under the updater.
  install -d -m 0755 -o root -g root /var/lib/venue-gateway-update
  chown root:root /var/lib/venue-gateway-update
  chmod 0755 /var/lib/venue-gateway-update
  if [ -e "$ETC/environment" ]; then chown root:root "$ETC/environment"; fi
  # The unit with this install's paths (the shipped file names the defaults), renamed into place whole.
  sed -e "s|/opt/venue-gateway/|$PREFIX/|g" -e "s|/etc/venue-gateway/|$ETC/|g" \
    "$src/systemd/venue-gateway.service" >"$unit.new"
  chmod 0644 "$unit.new"
  if cmp -s "$unit.new" "$unit"; then unit_changed=no; else unit_changed=yes; fi
  mv "$unit.new" "$unit"
  # time-sync.target, which the unit starts after, waits for the clock to be synchronised only with a unit that
  # waits for it enabled: the wristband radio must not start on a clock left at the last shutdown. A box with no time
  # source waits until it has one (see the README). Where chrony keeps the clock, chrony's own (chrony-wait.service
  # asks chronyd); systemd-time-wait-sync would miss chronyd's word when no clock step comes with it, and wait for
  # ever. Elsewhere systemd-time-wait-sync, which systemd-timesyncd tells.
  # `enable` works offline (in a chroot); the rest only on a running systemd.
  if [ -e /lib/systemd/system/chrony-wait.service ] || [ -e /usr/lib/systemd/system/chrony-wait.service ]; then
    systemctl disable --quiet systemd-time-wait-sync.service 2>/dev/null || true
    systemctl enable chrony-wait.service venue-gateway.service
  else
    systemctl enable systemd-time-wait-sync.service venue-gateway.service
  fi
  if [ -d /run/systemd/system ]; then
    systemctl daemon-reload
    # An upgrade of a running box: the service goes onto the new version or unit (a stopped one stays stopped).
    if [ "$was" != "versions/$LABEL" ] || [ "$unit_changed" = yes ]; then
      systemctl try-restart venue-gateway.service
    fi
  fi
  # `venue-gateway` on the PATH, whichever version is current.
  ln -sfn "$PREFIX/current/bin/venue-gateway" /usr/local/bin/.venue-gateway.new
  mv -T /usr/local/bin/.venue-gateway.new /usr/local/bin/venue-gateway
  say "enabled venue-gateway.service: put the tokens in $ETC/tokens/ (mode 0640, group venue-gateway), then:" \
    "systemctl start venue-gateway"
fi
"$PREFIX/current/bin/venue-gateway" --version

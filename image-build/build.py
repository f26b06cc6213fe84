"""Build the box's disk image (`make image`): an arm64 Debian bookworm root with the gateway from this tree, as a
Raspberry Pi 4 image and as a variant that qemu-system-aarch64 -M virt boots (docs/image.md).

Runs as root on a Debian or Ubuntu x86_64 machine with qemu-user-static registered through binfmt_misc and the
Debian package archive reachable: nothing else is downloaded (no base image), and no loop device is used (the file
systems are made from directories by mke2fs -d and mtools, then placed in the disk with dd). What does not change
between builds is cached in build/image-cache/: the downloaded .debs, the base root (a tarball keyed by its package
list and sources), and the aarch64 wheels (keyed by the lock file's hashes). A code change costs the stage that
installs the gateway into a copy of the base root, and the file systems.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent
CACHE = SRC / "build" / "image-cache"
OUT = SRC / "build" / "image"

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
SOURCES = [f"deb {MIRROR} {SUITE} main non-free-firmware",
           f"deb {MIRROR} {SUITE}-updates main non-free-firmware",
           f"deb http://deb.debian.org/debian-security {SUITE}-security main non-free-firmware"]
# The root's packages, on top of Debian's `required` set. The kernel is Debian's (linux-image-arm64, which boots
# both a Raspberry Pi 4 and qemu's virt machine), the Pi's boot firmware is raspi-firmware (non-free-firmware), with
# the firmware of its Wi-Fi/Bluetooth chip and BlueZ, which the BLE drivers talk to over D-Bus. The clock is kept by
# chrony (a full NTP client: it tells the kernel its estimated error, which the gateway's clock watch reads), not
# systemd-timesyncd.
PACKAGES = ["systemd", "systemd-sysv", "udev", "dbus", "kmod", "procps", "iproute2", "netbase", "ca-certificates",
            "chrony", "systemd-resolved", "python3", "python3-venv", "openssh-server",
            "linux-image-arm64", "raspi-firmware", "firmware-brcm80211", "bluez", "bluez-firmware",
            "e2fsprogs", "dosfstools", "fdisk"]
# Documentation, manual pages and translations are not installed: the box has no one to read them.
DPKG_OPTIONS = ["path-exclude=/usr/share/man/*", "path-exclude=/usr/share/doc/*",
                "path-include=/usr/share/doc/*/copyright", "path-exclude=/usr/share/locale/*",
                "path-exclude=/usr/share/info/*"]

# update-initramfs diverted to true while the packages are installed, then restored and run once for the kernel.
NO_INITRAMFS = ('chroot "$1" dpkg-divert --quiet --local --rename --add /usr/sbin/update-initramfs && '
                'ln -s /bin/true "$1"/usr/sbin/update-initramfs')
INITRAMFS = ('rm "$1"/usr/sbin/update-initramfs && '
             'chroot "$1" dpkg-divert --quiet --local --rename --remove /usr/sbin/update-initramfs && '
             'chroot "$1" update-initramfs -c -k all')

STARTED = time.monotonic()


def say(message: str) -> None:
    elapsed = time.monotonic() - STARTED
    print(f"image [{int(elapsed) // 60:2d}:{int(elapsed) % 60:02d}] {message}", flush=True)


def run(*argv: str | Path, **kwargs: Any) -> subprocess.CompletedProcess[str]:
    done: subprocess.CompletedProcess[str] = subprocess.run([str(a) for a in argv], check=True, text=True, **kwargs)
    return done


def digest(*parts: str) -> str:
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def base_root() -> Path:
    """The base root as a tarball: mmdebstrap of PACKAGES for arm64, built once per package list and sources; the
    .debs it downloads are kept in the cache for the next one."""
    key = digest(SUITE, *SOURCES, *sorted(PACKAGES), *DPKG_OPTIONS)
    tarball = CACHE / f"base-{key}.tar"
    if tarball.exists():
        say(f"base root: cached ({tarball.name}, {tarball.stat().st_size / 2**20:.0f} MiB)")
        return tarball
    debs = CACHE / "debs"
    debs.mkdir(parents=True, exist_ok=True)
    say(f"base root: mmdebstrap {SUITE} arm64 with {len(PACKAGES)} packages ({len(list(debs.glob('*.deb')))} .debs "
        "cached); under emulation this takes about 20 minutes")
    partial = tarball.with_suffix(".tar.partial")
    run("mmdebstrap", "--mode=root", "--architectures=arm64", "--variant=minbase", "--format=tar",
        f"--include={','.join(PACKAGES)}", *(f"--dpkgopt={o}" for o in DPKG_OPTIONS),
        "--skip=download/empty", "--skip=essential/unlink",
        "--setup-hook=mkdir -p \"$1\"/var/cache/apt/archives/",
        f"--setup-hook=sync-in {debs} /var/cache/apt/archives/",
        f"--customize-hook=sync-out /var/cache/apt/archives {debs}",
        "--customize-hook=rm -f \"$1\"/var/cache/apt/archives/*.deb",
        # The initrd made once, at the end: each package with an initramfs hook would otherwise trigger its own
        # run, and each takes minutes under emulation.
        f"--essential-hook={NO_INITRAMFS}",
        f"--customize-hook={INITRAMFS}",
        SUITE, partial, *SOURCES)
    partial.rename(tarball)
    say(f"base root: {tarball.name}, {tarball.stat().st_size / 2**20:.0f} MiB")
    return tarball


def wheels() -> Path:
    """The aarch64 wheels of the lock file, downloaded by hash on this machine (the chroot installs them offline):
    a directory keyed by the lock's content, kept for the next build."""
    lock = HERE / "requirements-cp311-aarch64.txt"
    target = CACHE / f"wheels-{digest(lock.read_text(encoding='utf-8'))}"
    if (target / ".complete").exists():
        say(f"wheels: cached ({target.name}, {len(list(target.glob('*.whl')))} wheels)")
        return target
    pip = SRC / ".venv" / "bin" / "pip"
    say(f"wheels: pip download of {lock.name} for aarch64 by hash")
    # The platforms a box's pip accepts: manylinux from glibc 2.17 (manylinux2014) to 2.31, as image-build/lock.py
    # resolved them.
    platforms = [f"--platform=manylinux_2_{minor}_aarch64" for minor in range(17, 32)]
    run(pip, "download", "--quiet", "--disable-pip-version-check", "--no-deps", "--only-binary=:all:",
        "--require-hashes", *platforms, "--python-version=3.11", "--implementation=cp", "--abi=cp311",
        "--dest", target, "-r", lock)
    (target / ".complete").touch()
    say(f"wheels: {len(list(target.glob('*.whl')))} wheels, {du(target) / 2**20:.0f} MiB")
    return target


def du(path: Path) -> int:
    return int(run("du", "-sb", "--apparent-size", path, stdout=subprocess.PIPE).stdout.split()[0])


def source_files() -> list[str]:
    """This tree's files as git sees them (tracked, and new ones not ignored), with what is uncommitted."""
    out = run("git", "-C", SRC, "ls-files", "-z", "--cached", "--others", "--exclude-standard",
              stdout=subprocess.PIPE).stdout
    return [name for name in out.split("\0") if name and (SRC / name).is_file()]


def in_root(root: Path, script: str, env: dict[str, str] | None = None) -> None:
    """Run a shell script in the arm64 root (through qemu-user), with /proc, /sys and /dev mounted in a mount
    namespace of its own: whatever happens, nothing stays mounted on this machine."""
    run("unshare", "--mount", "--propagation", "private", "--", "sh", "-euc",
        'r=$1; shift; mount -t proc proc "$r/proc"; mount -t sysfs sysfs "$r/sys"; mount --rbind /dev "$r/dev"; '
        'mount -t tmpfs tmpfs "$r/run"; exec chroot "$r" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin '
        'LANG=C.UTF-8 "$@"', "in_root", root, *(f"{k}={v}" for k, v in (env or {}).items()),
        "/bin/sh", "-euc", script)


def stage(tarball: Path, wheel_dir: Path) -> Path:
    """The image's root: the base root, the gateway installed into it by image-build/install.sh (offline, from the
    wheels), the overlay in image-build/rootfs/, the first-boot unit, and the box's settings."""
    root = CACHE / "root"
    if root.exists():
        shutil.rmtree(root)
    root.mkdir()
    say("root: unpacking the base root")
    run("tar", "-xpf", tarball, "--numeric-owner", "-C", root)
    files = source_files()
    src = root / "tmp" / "venue-gateway-src"
    for name in files:
        (src / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(SRC / name, src / name)
    shutil.copytree(wheel_dir, root / "tmp" / "wheels")
    say(f"root: image-build/install.sh in the arm64 root ({len(files)} files of this tree, pip offline from the "
        "wheels)")
    t = time.monotonic()
    in_root(root, "sh /tmp/venue-gateway-src/image-build/install.sh",
            {"PIP_NO_INDEX": "1", "PIP_FIND_LINKS": "/tmp/wheels", "PIP_DISABLE_PIP_VERSION_CHECK": "1",
             "PIP_NO_CACHE_DIR": "1"})
    say(f"root: installed in {time.monotonic() - t:.0f} s")
    shutil.rmtree(src)
    shutil.rmtree(root / "tmp" / "wheels")
    configure(root)
    return root


def configure(root: Path) -> None:
    """The box's settings: the overlay, the units enabled, the first-boot step, SSH keys-only and off until a key
    is given, no machine id or SSH host key shared by every card, the data partition's tree."""
    say("root: the box's settings")
    for path in sorted((HERE / "rootfs").rglob("*")):
        target = root / path.relative_to(HERE / "rootfs")
        if path.is_dir():
            target.mkdir(parents=True, exist_ok=True)
        else:
            shutil.copy2(path, target)
    shutil.copy2(SRC / "systemd" / "venue-gateway-firstboot.service",
                 root / "etc" / "systemd" / "system" / "venue-gateway-firstboot.service")
    (root / "etc" / "hostname").write_text("venue-gateway\n")
    (root / "etc" / "hosts").write_text("127.0.0.1\tlocalhost\n127.0.1.1\tvenue-gateway\n"
                                        "::1\t\tlocalhost ip6-localhost ip6-loopback\n")
    # Each box makes its own machine id (an empty file: generated at boot, written once the root is writable).
    (root / "etc" / "machine-id").write_text("")
    (root / "var" / "lib" / "dbus" / "machine-id").unlink(missing_ok=True)
    for key in (root / "etc" / "ssh").glob("ssh_host_*"):
        key.unlink()
    for lists in (root / "var" / "lib" / "apt" / "lists").glob("*_*"):
        lists.unlink()
    in_root(root, "systemctl enable systemd-networkd.service systemd-resolved.service chrony.service "
                  "chrony-wait.service venue-gateway-card.service venue-gateway-firstboot.service "
                  "venue-gateway-grow-data.service "
                  "venue-gateway.service ssh.service; "
                  "ln -sf ../run/systemd/resolve/stub-resolv.conf /etc/resolv.conf; "
                  "mkdir -p /boot/firmware /data; passwd -l root >/dev/null; "
                  # `venue-gateway doctor`, `venue-gateway update` on the PATH: the current version's.
                  "ln -sf /opt/venue-gateway/current/bin/venue-gateway /usr/local/bin/venue-gateway")
    # The data partition's tree: the configuration (with what first boot writes there) and the state directory,
    # bound over /etc/venue-gateway and /var/lib/venue-gateway by /etc/fstab.
    data = CACHE / "data"
    if data.exists():
        shutil.rmtree(data)
    (data / "state").mkdir(parents=True)
    etc = root / "etc" / "venue-gateway"
    run("cp", "-a", etc, data / "etc")  # with its owners (root:venue-gateway) and modes
    shutil.rmtree(etc)
    etc.mkdir(mode=0o755)
    os.chmod(data / "state", 0o750)
    state = root / "var" / "lib" / "venue-gateway"
    if state.exists():
        shutil.rmtree(state)
    state.mkdir(mode=0o755)
    account = next(line.split(":") for line in (root / "etc" / "passwd").read_text().splitlines()
                   if line.startswith("venue-gateway:"))
    os.chown(data / "state", int(account[2]), int(account[3]))


def kernel(root: Path) -> tuple[Path, Path, str]:
    """The root's kernel, its initrd and its version (Debian's linux-image-arm64)."""
    vmlinuz = sorted((root / "boot").glob("vmlinuz-*"))[-1]
    version = vmlinuz.name.removeprefix("vmlinuz-")
    return vmlinuz, root / "boot" / f"initrd.img-{version}", version


def boot_tree(root: Path) -> Path:
    """The Raspberry Pi's boot partition as Debian's raspi-firmware writes it (its kernel hook, run in the root with
    the box's /etc/default/raspi-firmware): the Pi's firmware, Debian's kernel and initrd, the Pi's device trees,
    config.txt and cmdline.txt. The same hook keeps them up to date when the box upgrades its kernel."""
    in_root(root, "rm -rf /boot/firmware/*; DEB_MAINT_PARAMS=configure /etc/kernel/postinst.d/z50-raspi-firmware; "
                  "cp /usr/lib/raspi-firmware/* /boot/firmware/")
    boot = CACHE / "boot"
    if boot.exists():
        shutil.rmtree(boot)
    shutil.copytree(root / "boot" / "firmware", boot)
    for path in (root / "boot" / "firmware").iterdir():
        path.unlink()
    (boot / "venue-gateway").mkdir()
    (boot / "venue-gateway" / "README.txt").write_text(CARD_README)
    *_, version = kernel(root)
    say(f"boot partition: kernel {version}, {len(list(boot.glob('*.dtb')))} device trees, the Pi's firmware; "
        f"cmdline.txt: {(boot / 'cmdline.txt').read_text().strip()}")
    return boot


ROOT_ARGS = "root=LABEL=vg-root rw fsck.repair=yes net.ifnames=0 rootwait"
VIRT_CMDLINE = f"console=ttyAMA0,115200 {ROOT_ARGS}"
CARD_README = """\
Files left in this folder are taken by the box at its next boot (and renamed *.taken):
  authorized_keys   SSH public keys for root (SSH is keys only, and off until a key is given)
  gateway.toml      the box's configuration, replacing /etc/venue-gateway/gateway.toml
  timesyncd.conf    the venue's NTP servers, e.g. two lines: [Time] and NTP=10.0.0.1 (chrony then follows
                    these servers only)
"""

# The disk: a FAT boot partition, the root, and the data partition, MBR (the Pi's firmware reads the first FAT
# partition of an MBR disk). Sizes in MiB; the root has room for two more versions of the gateway beside its own.
BOOT_MIB = 256
DATA_MIB = 512
ROOT_FREE_MIB = 1024


def filesystems(root: Path, boot: Path) -> tuple[Path, Path, Path]:
    boot_img, root_img, data_img = CACHE / "boot.img", CACHE / "root.img", CACHE / "data.img"
    for img in (boot_img, root_img, data_img):
        img.unlink(missing_ok=True)
    say(f"file systems: FAT boot ({BOOT_MIB} MiB)")
    run("mkfs.vfat", "-F", "32", "-n", "VG-BOOT", "-C", boot_img, str(BOOT_MIB * 1024), stdout=subprocess.DEVNULL)
    run("mcopy", "-s", "-p", "-i", boot_img, *sorted(boot.iterdir()), "::/")
    root_mib = du(root) // 2**20 * 11 // 10 + ROOT_FREE_MIB
    say(f"file systems: ext4 root ({root_mib} MiB, {du(root) / 2**20:.0f} MiB used)")
    run("mke2fs", "-q", "-t", "ext4", "-L", "vg-root", "-d", root, root_img, f"{root_mib}M")
    say(f"file systems: ext4 data ({DATA_MIB} MiB)")
    run("mke2fs", "-q", "-t", "ext4", "-L", "vg-data", "-d", CACHE / "data", data_img, f"{DATA_MIB}M")
    return boot_img, root_img, data_img


def disk(boot_img: Path, root_img: Path, data_img: Path, image: Path) -> None:
    """The partition table (sfdisk on the image file) and each file system written at its partition's offset."""
    mib = 2**20
    sizes = [p.stat().st_size // mib for p in (boot_img, root_img, data_img)]
    image.unlink(missing_ok=True)
    with image.open("wb") as f:
        f.truncate((1 + sum(sizes)) * mib)
    table = "label: dos\nunit: sectors\n" + "".join(
        f"start={(1 + sum(sizes[:i])) * 2048}, size={size * 2048}, type={kind}\n"
        for i, (size, kind) in enumerate(zip(sizes, ("c", "83", "83"), strict=True)))
    run("sfdisk", "--quiet", "--no-reread", "--no-tell-kernel", image, input=table)
    for i, img in enumerate((boot_img, root_img, data_img)):
        run("dd", f"if={img}", f"of={image}", "bs=1M", f"seek={1 + sum(sizes[:i])}", "conv=notrunc,sparse",
            "status=none")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-only", action="store_true", help="build (or find) the cached base root and stop")
    args = parser.parse_args()
    if os.geteuid() != 0:
        print("make image runs as root (mmdebstrap, chroot, file ownership in the file systems)", file=sys.stderr)
        return 2
    tarball = base_root()
    if args.base_only:
        return 0
    root = stage(tarball, wheels())
    boot = boot_tree(root)
    boot_img, root_img, data_img = filesystems(root, boot)
    OUT.mkdir(parents=True, exist_ok=True)
    image = OUT / "venue-gateway-arm64.img"
    say("disk: partition table and file systems")
    disk(boot_img, root_img, data_img, image)
    # The virt variant: the same disk, started by qemu with the root's kernel and initrd (direct kernel boot).
    virt = OUT / "virt"
    virt.mkdir(exist_ok=True)
    vmlinuz, initrd, version = kernel(root)
    shutil.copy2(vmlinuz, virt / "vmlinuz")
    shutil.copy2(initrd, virt / "initrd.img")
    (virt / "cmdline").write_text(f"{VIRT_CMDLINE}\n")
    for img in (boot_img, root_img, data_img):
        img.unlink()
    allocated = image.stat().st_blocks * 512
    say(f"done: {image.relative_to(SRC)}: {image.stat().st_size / 2**20:.0f} MiB "
        f"({allocated / 2**20:.0f} MiB allocated); virt variant: {virt.relative_to(SRC)}/ (kernel {version}); "
        f"built in {time.monotonic() - STARTED:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())

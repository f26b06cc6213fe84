# The README's commands: `make run` (the gateway on the virtual venue) and `make test` (the whole suite).
# Both set up .venv on a fresh Debian/Ubuntu machine with Python 3.11+.

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
# Debian packages the test suite uses: mount/unshare for a real read-only or full filesystem, tshark as an
# independent protocol dissector, OLA as an independent Art-Net and sACN receiver, socat for pseudo-terminal pairs,
# liblo-tools (oscsend, oscdump) as an independent OSC sender and receiver, mosquitto as the MQTT broker, chromium
# with chromium-driver as the real browser the dashboard's tests drive (Selenium), and firefox-esr (WebDriver BiDi);
# postgresql for the fleet mirror's database, nats-server as a broker cluster (MQTT and JetStream), faketime to
# run a gateway whose wall clock is off by a set amount, and chrony (a chronyd that never touches the clock).
TEST_PEERS := util-linux mount tshark ola socat liblo-tools mosquitto chromium chromium-driver firefox-esr \
  systemd systemd-container avahi-daemon avahi-utils dbus iproute2 postgresql nats-server faketime chrony
# What `make run` brings up beside the gateway when it can: Mosquitto, the demo's local MQTT broker.
DEMO_PEERS := mosquitto

# Install Debian packages $(1) that are missing, as root; otherwise say which are missing and what $(2) does without.
define debian_packages
@missing=""; for p in $(1); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
if [ -n "$$missing" ]; then \
  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; } || \
      echo "could not install$$missing: $(2)"; \
  else echo "missing Debian packages:$$missing (sudo apt-get install$$missing): $(2)"; fi; \
fi
endef

.PHONY: run demo-peers test lint unit bench soak eval models peers lock clean fuzz vendor screenshots image image-test

$(VENV)/.created:
	@$(PYTHON) -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "venue-gateway needs Python 3.11 or newer; $(PYTHON) is " + sys.version.split()[0])'
	@$(PYTHON) -m venv $(VENV) 2>/dev/null || { \
	  if [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null; then \
	    apt-get update -qq && apt-get install -y -qq python3-venv && $(PYTHON) -m venv $(VENV); \
	  else echo "cannot create a virtual environment: install python3-venv (sudo apt-get install python3-venv)"; exit 1; fi; }
	$(BIN)/pip install -q --upgrade pip
	@touch $@

$(VENV)/.runtime: $(VENV)/.created pyproject.toml
	$(BIN)/pip install -q -e '.[sim]'
	@touch $@

$(VENV)/.test: $(VENV)/.runtime
	$(BIN)/pip install -q -e '.[sim,test,train]'
	@touch $@

$(VENV)/.train: $(VENV)/.runtime
	$(BIN)/pip install -q -e '.[sim,train]'
	@touch $@

# The virtual venue with its cloud side: Mosquitto and the reference consumer beside the gateway (gateway/demo.py).
run: $(VENV)/.runtime demo-peers
	$(BIN)/venue-gateway demo --config config/demo.toml

demo-peers:
	$(call debian_packages,$(DEMO_PEERS),the demo runs without cloud sync)

peers:
	$(call debian_packages,$(TEST_PEERS),tests that need them skip)

lint: $(VENV)/.test
	$(BIN)/ruff check gateway drivers models tests bench peers tools image-build
	$(BIN)/mypy
	$(BIN)/mypy --strict image-build/*.py

# On every core (pytest-xdist), each test module on one worker; then, on their own, the tests that listen on the
# machine's Art-Net and sACN ports (marked `wire`), where every other test's daemon sends its DMX, and those whose
# daemons and virtual air must not be starved of the cores (marked `alone`).
unit: $(VENV)/.test peers
	$(BIN)/python -m pytest -q -n auto --dist loadfile -m "not wire and not alone"
	$(BIN)/python -m pytest -q -m "wire or alone"

test: lint unit

# Every fuzz target (tests/fuzz) and the decoders' any-bytes properties with a long budget: FUZZ_EXAMPLES inputs
# each in total, in pytest runs of FUZZ_ROUND each; it prints how many inputs each target ran, and in how long.
FUZZ_EXAMPLES ?= 1000000
FUZZ_ROUND ?= 50000
fuzz: $(VENV)/.test
	$(BIN)/python -m tests.fuzz --examples $(FUZZ_EXAMPLES) --round $(FUZZ_ROUND)

bench: $(VENV)/.test peers
	$(BIN)/python -m bench

# A month on a box, compressed: the demo (with its broker) at high show speed for hours of show time, sampling
# memory, file descriptors, threads, disk and loop lag; their slopes per show-hour (SOAK_SHOW_HOURS, SOAK_SPEED).
soak: $(VENV)/.runtime demo-peers
	$(BIN)/python -m bench.soak

# The shipped models/*.onnx are what this writes: trained on the virtual venue with fixed seeds.
models: $(VENV)/.train
	$(BIN)/python -m models.train

# The models on held-out virtual shows, and the anomaly method on NAB's real data (NAB=path of a NAB-format copy).
NAB ?=
eval: $(VENV)/.train
	$(BIN)/python -m models.evaluate
	@if [ -n "$(NAB)" ]; then $(BIN)/python -m models.nab "$(NAB)"; else \
	  echo "NAB not evaluated: give NAB=PATH, a NAB-format copy of the Numenta Anomaly Benchmark (github.com/numenta/NAB: data/ and labels/)"; fi

# The box's lock files, image-build/requirements-cp311-{x86_64,aarch64}.txt, from pyproject.toml: every package
# pinned, with the hash of its wheel for each architecture (image-build/install.sh installs them by hash). Needs the
# package index; run it after changing a dependency, and commit what it writes.
lock: $(VENV)/.created
	$(BIN)/python image-build/lock.py

# The box's disk image (docs/image.md), as root: Debian bookworm arm64 with the gateway from this tree, for a Raspberry
# Pi 4 (build/image/venue-gateway-arm64.img) and qemu's virt machine (the same disk, build/image/virt/). Debian's
# packages only: the .debs, the base root and the aarch64 wheels are cached in build/image-cache/.
IMAGE_PEERS := mmdebstrap qemu-user-static binfmt-support dosfstools mtools fdisk e2fsprogs
image: $(VENV)/.created
	$(call debian_packages,$(IMAGE_PEERS),the image cannot be built)
	$(PYTHON) image-build/build.py

# Boot the virt variant in qemu-system-aarch64 and check the box under its own systemd: long, not in `make test`.
image-test:
	$(call debian_packages,qemu-system-arm openssh-client mtools fdisk,the image cannot be booted)
	$(PYTHON) image-build/image_test.py

# The dashboard's views at tablet size for the docs (docs/screenshots/), from the demo venue in headless Chromium.
screenshots: $(VENV)/.test peers
	$(BIN)/python -m tests.screenshots docs/screenshots

# The dashboard's front-end libraries (gateway/ui/static/vendor/), fetched from the npm registry at pinned versions and
# checked against their recorded hashes; the files are committed, so neither the box nor `make run` needs npm.
vendor:
	$(PYTHON) -m tools.vendor_ui

clean:
	rm -rf $(VENV) var .pytest_cache .mypy_cache .ruff_cache

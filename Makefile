# ovsctl — run as root on Debian/Ubuntu. `make demo` and `make test` install what they need.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
APT_PKGS := openvswitch-switch iproute2 iptables ethtool iputils-ping procps python3-venv
# real CNI callers for the runtime tests: containerd (CRI) + runc, podman, an offline image
# from busybox-static, and the reference plugins (portmap, tuning) chained after ours
APT_PKGS += containerd runc podman busybox-static containernetworking-plugins
# the Vagrant lab's checks (shellcheck, ruby -c, vagrant validate, systemd-analyze)
APT_PKGS += shellcheck ruby vagrant vagrant-libvirt systemd
# `ovsctl ui`: Graphviz lays the pictures out; its browser tests drive Debian's Chromium
# (Playwright from PyPI, never `playwright install`: no browser is downloaded)
APT_PKGS += graphviz chromium fonts-dejavu-core
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done

.PHONY: deps test unit integration demo lint clean bench

deps: $(STAMP_PIP)

$(STAMP_APT): Makefile
	@if ! dpkg -s $(APT_PKGS) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(APT_PKGS); \
	fi
	@test -x $(PY) || python3 -m venv $(VENV)
	@touch $@

$(STAMP_PIP): $(STAMP_APT) setup.cfg pyproject.toml
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	@touch $@

lint: deps
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

unit: deps
	$(PY) -m pytest tests/unit -q

integration: deps
	$(PY) -m pytest tests/integration -q

test: deps
	$(PY) -m pytest tests -q -p no:cacheprovider

demo: deps
	$(PY) -m ovsctl.lab.demo

# Benchmarks (not part of the tests): reference CNI plugins and iperf3 are installed here only.
BENCH_PKGS := iperf3
bench: deps
	@if ! dpkg -s $(BENCH_PKGS) >/dev/null 2>&1; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $(BENCH_PKGS); \
	fi
	$(PY) -m bench.run $(BENCH)

clean:
	rm -rf $(VENV) *.egg-info .pytest_cache .ruff_cache

# allworx: `make run` brings up the virtual office with the server in it;
# `make test` installs what is needed and runs every test.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done
TESTS ?= allworx
TRIAL_JOBS ?= 2

# Debian packages: the server's own needs (iptables/nftables, conntrack,
# libnetfilter-queue for the flow hook), and the lab's real clients and peers.
APT_PACKAGES := iproute2 iptables nftables conntrack libnetfilter-queue-dev \
	libnfnetlink-dev build-essential python3-dev python3-venv \
	dnsmasq isc-dhcp-client udhcpc dnsutils iputils-ping procps swaks ldap-utils iperf3 hping3 \
	baresip kea-dhcp4-server kea-admin dnsperf nmap curl socat ncat sox \
	postfix chromium chromium-driver \
	apache2-utils nginx-light espeak-ng kamailio libpugixml-dev libgsl-dev pkg-config cmake

.PHONY: deps run test check clean bench lab-down

deps: $(STAMP_APT) $(STAMP_PIP)

$(STAMP_APT):
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	  fi; \
	else echo "not root: skipping Debian packages (integration tests will skip)"; fi
	@mkdir -p $(VENV) && touch $@

$(STAMP_PIP): setup.cfg pyproject.toml | $(STAMP_APT)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

run: deps
	$(PY) -m allworx.lab.demo --config tap.conf

test: deps
	@set -o pipefail; mkdir -p _trial_log; \
	$(PY) -m twisted.trial --temp-directory=_trial_temp -j$(TRIAL_JOBS) $(TESTS) 2>&1 | tee _trial_log/trial.log; \
	status=$${PIPESTATUS[0]}; \
	$(PY) scripts/trial_summary.py $$status < _trial_log/trial.log

check: deps
	$(VENV)/bin/allworx check tap.conf

bench: deps
	$(PY) -m bench.run_all

lab-down:
	$(VENV)/bin/allworx lab down

clean:
	rm -rf _trial_temp* _trial_log build dist *.egg-info

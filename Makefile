# allworx: `make run` brings up the virtual office with the server in it;
# `make test` installs what is needed and runs every test; `make unit` runs the
# fast ones (all but the namespace tests of allworx.tests.lab).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_APT := $(VENV)/.apt-done
STAMP_PIP := $(VENV)/.pip-done
TESTS ?= allworx
# The fast tests: every test package and module but the namespace tests.
UNIT_TESTS = $(filter-out allworx.tests.lab,$(patsubst %.,%,$(subst /,.,$(dir \
	$(wildcard allworx/tests/*/__init__.py))))) \
	$(patsubst %.py,%,$(subst /,.,$(wildcard allworx/tests/test_*.py)))
TRIAL_JOBS ?= 2

# Debian packages, each one named: `--no-install-recommends` installs nothing
# that is only recommended, so what a test needs from a Recommends is listed too.
# The server's own needs: netfilter tools and libraries for the flow hook,
# espeak-ng for the voicemail prompts.
APT_PACKAGES := iproute2 iptables nftables conntrack libnetfilter-queue-dev libnfnetlink-dev \
	espeak-ng
# Building the venv and the benchmarks' peers.
APT_PACKAGES += build-essential python3-dev python3-venv pkg-config cmake libpugixml-dev libgsl-dev
# The lab and the real clients of its tests (allworx.lab.topology.PACKAGES
# names the package of each program); swaks does STARTTLS with Net::SSLeay
# (libnet-ssleay-perl), which it only recommends.
APT_PACKAGES += dnsmasq-base isc-dhcp-client udhcpc bind9-dnsutils iputils-ping procps socat curl \
	nmap swaks libnet-ssleay-perl ldap-utils baresip-core chromium chromium-driver isync openssl pebble \
	ntpsec-ntpdig
# The benchmarks' peers and load generators, and tools for trying the lab by hand
# (bench/imap.py runs Dovecot as its own process: the system's service is disabled).
APT_PACKAGES += iperf3 hping3 kea-dhcp4-server kea-admin dnsperf postfix apache2-utils \
	nginx-light kamailio ncat sox rtpengine-daemon dovecot-imapd
# Mail authentication's peers (bench/mailauth.py: Postfix with OpenDKIM and policyd-spf)
# and the optional scanners the server can use (rspamd's HTTP protocol, clamd's socket).
APT_PACKAGES += opendkim opendkim-tools postfix-policyd-spf-python rspamd clamav-daemon
# The dashboard's charts (Chart.js, served from Debian's file) and the Diagnostics page's traceroute.
APT_PACKAGES += libjs-chart.js traceroute
# Sites and remote access (SPEC 16): WireGuard in user space where the kernel has no
# module (the server runs it as its child; the lab's and the tests' tunnels too).
APT_PACKAGES += wireguard-go

.PHONY: deps run test unit check clean bench lab-down

deps: $(STAMP_APT) $(STAMP_PIP)

$(STAMP_APT): Makefile
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(APT_PACKAGES); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	    case " $$missing " in *" dovecot-imapd "*) \
	      systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true;; esac; \
	  fi; \
	else echo "not root: skipping Debian packages (the namespace tests will fail: they need root)"; fi
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
	HYPOTHESIS_PROFILE=ci $(PY) -m twisted.trial --temp-directory=_trial_temp -j$(TRIAL_JOBS) $(TESTS) 2>&1 | tee _trial_log/trial.log; \
	status=$${PIPESTATUS[0]}; \
	$(PY) scripts/trial_summary.py $$status < _trial_log/trial.log

unit: deps
	@$(MAKE) --no-print-directory test TESTS="$(UNIT_TESTS)"

check: deps
	$(VENV)/bin/allworx check tap.conf

bench: deps
	$(PY) -m bench.run_all

lab-down:
	$(VENV)/bin/allworx lab down

clean:
	rm -rf _trial_temp* _trial_log build dist *.egg-info

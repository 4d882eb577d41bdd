# allworx: `make run` brings up the virtual office with the server in it (and
# links `allworx` into /usr/local/bin); `make test` installs what is needed and
# runs every test; `make unit` runs the fast ones (all but the namespace tests
# of allworx.tests.lab); `make bench` adds the benchmarks' peers and runs them.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP_PIP := $(VENV)/.pip-done
TESTS ?= allworx
# The fast tests: every test package and module but the namespace tests.
UNIT_TESTS = $(filter-out allworx.tests.lab,$(patsubst %.,%,$(subst /,.,$(dir \
	$(wildcard allworx/tests/*/__init__.py))))) \
	$(patsubst %.py,%,$(subst /,.,$(wildcard allworx/tests/test_*.py)))
TRIAL_JOBS ?= 2

# Debian packages, each one named: `--no-install-recommends` installs nothing
# that is only recommended, so what a test needs from a Recommends is listed too.
# Three lists: RUN_PACKAGES for the server and the lab (`make run`),
# TEST_PACKAGES for the clients only the tests use (`make test` installs both),
# BENCH_PACKAGES for the benchmarks' peers (`make bench` adds them).
# The server's own needs: netfilter tools and libraries for the flow hook,
# espeak-ng for the voicemail prompts, the dashboard's charts (Chart.js, served
# from Debian's file) and the Diagnostics page's traceroute; building the venv.
RUN_PACKAGES := iproute2 iptables nftables conntrack libnetfilter-queue-dev libnfnetlink-dev \
	espeak-ng libjs-chart.js traceroute build-essential python3-dev python3-venv pkg-config
# The lab (allworx.lab.topology.PACKAGES names the package of each program):
# the ISP's DHCP and DNS, the PCs' DHCP client, the admin port's relay, the
# telephony provider and the phones' SIP clients, the ACME CA, the branch's
# and the laptop's WireGuard in user space (SPEC 16), and the clients the
# banner of `make run` shows; swaks does STARTTLS with Net::SSLeay
# (libnet-ssleay-perl), which it only recommends.
RUN_PACKAGES += dnsmasq-base isc-dhcp-client procps socat curl kamailio pebble baresip-core \
	wireguard-go bind9-dnsutils iputils-ping swaks libnet-ssleay-perl openssl
# What only the tests' real clients and peers need: udhcpc, nmap, ldapsearch, the TFTP
# clients (busybox's and tftp-hpa's), ntpdig,
# headless Chromium, mbsync, iperf3 (shaping), the content filter's rspamd
# and clamd (the optional scanners the server can use), and Dovecot's imap, the
# peer whose FETCH answers the IMAP tests compare with (it is run as its own
# process: the system's service is disabled; bench/imap.py runs it too).
TEST_PACKAGES := udhcpc nmap ldap-utils chromium chromium-driver isync iperf3 \
	rspamd clamav-daemon ntpsec-ntpdig busybox tftp-hpa dovecot-imapd
# The benchmarks' peers and load generators: SIPp's build tools and -dev packages
# (its peer README: cmake g++ libssl-dev libncurses-dev libpugixml-dev libgsl-dev), Kea, dnsperf,
# Postfix (with OpenDKIM and policyd-spf for bench/mailauth.py), nginx, ab,
# hping3 (iperf3, Kamailio and Dovecot come with the other lists), rtpengine, ncat and sox for
# trying things by hand.
BENCH_PACKAGES := cmake g++ libssl-dev libncurses-dev libpugixml-dev libgsl-dev hping3 kea-dhcp4-server kea-admin \
	dnsperf postfix apache2-utils nginx-light ncat sox rtpengine-daemon \
	opendkim opendkim-tools postfix-policyd-spf-python
STAMP_APT_RUN := $(VENV)/.apt-run-done
STAMP_APT_TEST := $(VENV)/.apt-test-done
STAMP_APT_BENCH := $(VENV)/.apt-bench-done
# Where `make run` links the allworx command, so that it is on PATH in a new shell.
BINDIR ?= /usr/local/bin

# apt_install(LIST): install, as root, the packages of LIST not yet installed.
define apt_install
	@if [ "$$(id -u)" = 0 ]; then \
	  missing=$$(for p in $(1); do dpkg-query -W -f='$${Status}\n' $$p 2>/dev/null | grep -q 'ok installed' || echo $$p; done); \
	  if [ -n "$$missing" ]; then \
	    echo "installing Debian packages: $$missing"; \
	    apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $$missing; \
	    case " $$missing " in *" dovecot-imapd "*) \
	      systemctl disable --now dovecot.service dovecot.socket >/dev/null 2>&1 || true;; esac; \
	  fi; \
	else echo "not root: skipping Debian packages (the lab and the namespace tests need root)"; fi
	@mkdir -p $(VENV) && touch $@
endef

.PHONY: deps deps-run run test unit check clean bench lab-down link bytecode

# Everything the server, the lab and the tests need (not the benchmarks' peers).
deps: $(STAMP_APT_RUN) $(STAMP_APT_TEST) $(STAMP_PIP)
# What the server and the lab need.
deps-run: $(STAMP_APT_RUN) $(STAMP_PIP)

$(STAMP_APT_RUN): Makefile
	$(call apt_install,$(RUN_PACKAGES))

$(STAMP_APT_TEST): Makefile
	$(call apt_install,$(TEST_PACKAGES))

$(STAMP_APT_BENCH): Makefile
	$(call apt_install,$(BENCH_PACKAGES))

$(STAMP_PIP): setup.cfg pyproject.toml | $(STAMP_APT_RUN)
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip wheel setuptools
	$(PY) -m pip install -q -e '.[test]' --config-settings editable_mode=compat
	touch $@

# The sources compiled to bytecode, as installing a package does: the server
# then starts without compiling every module (an environment that sets
# PYTHONDONTWRITEBYTECODE would otherwise compile them at every start).
bytecode: $(STAMP_PIP)
	@$(PY) -m compileall -q allworx bench

# `allworx` on PATH: a link in $(BINDIR) to the venv's script (as root; a
# file there that is not a link is left alone, and said so).
link: $(STAMP_PIP)
	@if [ "$$(id -u)" != 0 ]; then echo "not root: not linking $(BINDIR)/allworx (use $(abspath $(VENV))/bin/allworx)"; \
	elif [ -e $(BINDIR)/allworx ] && [ ! -L $(BINDIR)/allworx ]; then \
	  echo "$(BINDIR)/allworx exists and is not a link: left alone (use $(abspath $(VENV))/bin/allworx)"; \
	else ln -sfn $(abspath $(VENV))/bin/allworx $(BINDIR)/allworx; fi

run: deps-run link bytecode
	$(PY) -m allworx.lab.demo --config tap.conf

test: deps bytecode
	@set -o pipefail; mkdir -p _trial_log; \
	HYPOTHESIS_PROFILE=ci $(PY) -m twisted.trial --temp-directory=_trial_temp -j$(TRIAL_JOBS) $(TESTS) 2>&1 | tee _trial_log/trial.log; \
	status=$${PIPESTATUS[0]}; \
	$(PY) scripts/trial_summary.py $$status < _trial_log/trial.log

unit: deps
	@$(MAKE) --no-print-directory test TESTS="$(UNIT_TESTS)"

check: deps
	$(VENV)/bin/allworx check tap.conf

# py-spy: the flame graphs of `make bench BENCH_ARGS="--profile DIR"` (bench/common.py).
bench: deps $(STAMP_APT_BENCH) bytecode
	$(PY) -m pip install -q py-spy
	$(PY) -m bench.run_all $(BENCH_ARGS)

lab-down:
	$(VENV)/bin/allworx lab down

clean:
	rm -rf _trial_temp* _trial_log build dist *.egg-info

#!/bin/sh
# Install what benchmarks/lab/lab.py needs (synthetic lab traffic) on a Debian machine, as root.
#
# Services are installed but not started: the lab starts its own copies inside its namespaces,
# on their own configurations. A policy-rc.d that refuses service starts is put in place for the
# install (when none exists) so that no package starts a daemon on the machine itself.
set -eu

if [ "$(id -u)" -ne 0 ]; then
    echo "install.sh: run as root (apt-get)" >&2
    exit 1
fi

PACKAGES="iproute2 tcpdump tcpreplay curl nginx-light openssh-server openssh-client \
dnsmasq-base python3 python3-pyftpdlib procps \
nmap hydra hping3 slowhttptest masscan"

policy=/usr/sbin/policy-rc.d
made_policy=
if [ ! -e "$policy" ]; then
    printf '#!/bin/sh\nexit 101\n' > "$policy"
    chmod 755 "$policy"
    made_policy=1
fi
cleanup() { if [ -n "$made_policy" ]; then rm -f "$policy"; fi; }
trap cleanup EXIT INT TERM

apt-get update -q
# shellcheck disable=SC2086
DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends $PACKAGES

#!/usr/bin/env bash
# Installs rtpengine's daemon (Debian package rtpengine-daemon, 10.5 on
# bookworm) for the relay benchmark's comparison path, and makes sure the
# packaged service is neither running nor started at boot: the bench starts
# its own rtpengine, userspace only, as a child process.
#
#   benches/scripts/install-rtpengine.sh      (root; idempotent)
#
# Only the daemon, without recommends: not the kernel module (DKMS), the
# iptables extension or the recording daemon, which the bench does not use.
set -euo pipefail

if [ "$(id -u)" -ne 0 ]; then
    echo "install-rtpengine.sh: run as root (apt-get install)" >&2
    exit 1
fi

if ! command -v rtpengine >/dev/null; then
    export DEBIAN_FRONTEND=noninteractive
    if ! apt-cache show rtpengine-daemon >/dev/null 2>&1; then
        apt-get update
    fi
    apt-get install -y --no-install-recommends rtpengine-daemon
fi

# The package enables and (where the init system allows it) starts the
# service with /etc/rtpengine/rtpengine.conf. Stop and disable it.
if [ -d /run/systemd/system ] && command -v systemctl >/dev/null; then
    systemctl disable --now rtpengine-daemon.service >/dev/null 2>&1 || true
else
    if [ -x /etc/init.d/rtpengine-daemon ]; then
        /etc/init.d/rtpengine-daemon stop >/dev/null 2>&1 || true
    fi
    if command -v update-rc.d >/dev/null; then
        update-rc.d rtpengine-daemon disable >/dev/null 2>&1 || true
    fi
    if command -v systemctl >/dev/null; then
        # No systemd running (a container): drop the boot-time link anyway.
        systemctl disable rtpengine-daemon.service >/dev/null 2>&1 || true
    fi
fi

rtpengine --version

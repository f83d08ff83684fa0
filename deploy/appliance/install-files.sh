#!/usr/bin/env bash
# Installs the appliance's own files (deploy/install.sh --image runs this while an image is
# built): the first-boot service, the console screen, the bridge xenbr0 for guests and the
# boot loader's defaults. Takes the app's folder (default /opt/xenweb).
set -euo pipefail

APP="${1:-/opt/xenweb}"
HERE="$APP/deploy/appliance"

install -m 0755 "$HERE/first-boot.sh" /usr/local/sbin/xenweb-first-boot
install -m 0755 "$HERE/console-info.sh" /usr/local/sbin/xenweb-console-info
for unit in xenweb-first-boot.service xenweb-console.service xenweb-console.path; do
    install -m 0644 "$HERE/$unit" /etc/systemd/system/
done
install -D -m 0644 "$HERE/xenweb-console.tmpfiles" /etc/tmpfiles.d/xenweb-console.conf
# The seed's bridged networking: xenbr0 takes the first NIC (first boot names it) and asks
# DHCP for the address; guests' NICs join the bridge.
install -d -m 0755 /etc/systemd/network
install -m 0644 "$HERE/xenbr0.netdev" /etc/systemd/network/10-xenbr0.netdev
install -m 0644 "$HERE/xenbr0.network" /etc/systemd/network/10-xenbr0.network
install -d -m 0755 /etc/default/grub.d
install -m 0644 "$HERE/grub-defaults.cfg" /etc/default/grub.d/xenweb.cfg
systemctl enable systemd-networkd.service xenweb-first-boot.service xenweb-console.service \
    xenweb-console.path
# libvirt owns the guests: Xen's own xendomains script would save and restore them behind
# its back. On the way down guests shut down cleanly; at boot only those marked autostart
# start (libvirtd does that), as on any virtualisation server.
systemctl mask xendomains.service
cat >/etc/default/libvirt-guests <<'EOF_GUESTS'
# xenweb appliance: guests marked autostart start with libvirtd; the others stay off.
# The local hypervisor by name: "default" finds no driver on a dom0 without QEMU's.
URIS=xen:///system
ON_BOOT=ignore
ON_SHUTDOWN=shutdown
SHUTDOWN_TIMEOUT=120
EOF_GUESTS

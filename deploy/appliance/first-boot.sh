#!/usr/bin/env bash
# The appliance's first boot (xenweb-first-boot.service, before the network and every
# service): what depends on the disk the image was written to, and what two machines made
# from one image must not share. Every step keeps what is already there, so a failed first
# boot can simply run again at the next one.
#   1. the root file system grows to the end of its disk;
#   2. SSH host keys; root's authorized_keys from a seed disk, if one is attached (a file
#      system labelled xenweb-seed holding authorized_keys, like cloud images' NoCloud seed);
#   3. the bridge xenbr0 takes the first NIC;
#   4. libvirt's storage pool "default" (/var/lib/xen/images, Xen's place for guest images),
#      with this machine's own UUID;
#   5. deploy/install.sh --first-boot: secret key, Redis password, TLS certificate,
#      database and setup token.
set -euo pipefail

APP=/opt/xenweb
DONE=/var/lib/xenweb/.first-boot-done
SEED_LABEL=xenweb-seed
UPLINK=/etc/systemd/network/20-xenbr0-uplink.network

log() { printf 'xenweb first boot: %s\n' "$*"; }

grow_root() {
    local source name disk part rc=0
    source="$(findmnt -no SOURCE /)"
    name="${source#/dev/}"
    if [[ ! -e "/sys/class/block/$name/partition" ]]; then
        log "the root file system $source is not on a partition: not growing it"
        return
    fi
    disk="/dev/$(lsblk -no PKNAME "$source" | head -n1)"
    part="$(cat "/sys/class/block/$name/partition")"
    growpart "$disk" "$part" || rc=$?
    case "$rc" in
        0) log "partition $part of $disk grown to the end of the disk" ;;
        1) log "the root partition already fills $disk" ;;
        *) log "warning: growpart $disk $part failed ($rc): the root file system keeps its size"; return ;;
    esac
    resize2fs "$source" >/dev/null 2>&1 || log "warning: resize2fs $source failed"
}

ssh_keys() {
    ssh-keygen -A
    local seed mnt
    seed="$(blkid -L "$SEED_LABEL" 2>/dev/null || true)"
    [[ -n "$seed" ]] || return 0
    mnt="$(mktemp -d)"
    if mount -o ro "$seed" "$mnt"; then
        if [[ -s "$mnt/authorized_keys" ]]; then
            install -d -m 0700 /root/.ssh
            install -m 0600 "$mnt/authorized_keys" /root/.ssh/authorized_keys
            log "root's SSH keys taken from the seed disk $seed"
        fi
        umount "$mnt"
    fi
    rmdir "$mnt"
}

# The first physical NIC by its bus address; matched by MAC, so a renamed interface keeps it.
first_nic() {
    local dev path best="" best_path=""
    for dev in /sys/class/net/*; do
        [[ -e "$dev/device" ]] || continue
        path="$(readlink -f "$dev/device")"
        if [[ -z "$best" || "$path" < "$best_path" ]]; then
            best="$dev"
            best_path="$path"
        fi
    done
    [[ -n "$best" ]] && cat "$best/address"
}

bridge_uplink() {
    [[ -e "$UPLINK" ]] && return
    local mac="" tries=0
    # NIC drivers load while udev goes through the devices: wait for the first one.
    while [[ -z "$mac" ]] && ((tries < 240)); do
        mac="$(first_nic || true)"
        [[ -n "$mac" ]] || { sleep 0.5; tries=$((tries + 1)); }
    done
    if [[ -z "$mac" ]]; then
        log "warning: no network card found: xenbr0 has no uplink"
        return
    fi
    printf '[Match]\nMACAddress=%s\n\n[Network]\nBridge=xenbr0\n' "$mac" >"$UPLINK"
    log "xenbr0 bridges the NIC $mac"
}

default_pool() {
    local pools=/etc/libvirt/storage
    [[ -e "$pools/default.xml" ]] && return
    install -d -m 0755 "$pools/autostart" /var/lib/xen/images
    cat >"$pools/default.xml" <<EOF_POOL
<pool type='dir'>
  <name>default</name>
  <uuid>$(cat /proc/sys/kernel/random/uuid)</uuid>
  <target>
    <path>/var/lib/xen/images</path>
  </target>
</pool>
EOF_POOL
    ln -sf "$pools/default.xml" "$pools/autostart/default.xml"
    log "storage pool default: /var/lib/xen/images"
}

grow_root
ssh_keys
bridge_uplink
default_pool
bash "$APP/deploy/install.sh" --first-boot --server-name "$(hostname)"
touch "$DONE"
log "done"

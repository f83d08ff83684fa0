#!/usr/bin/env bash
# Turns a Debian 12 dom0 (Xen + libvirt's Xen driver) into the xenweb appliance:
# packages, a `xenweb` system user, the app in /opt/xenweb with its venv and front-end
# files, Redis on localhost with a password, nginx with TLS (a self-signed certificate
# made here, replaceable), systemd units for web, worker, beat and watcher. Afterwards
# https://<this host>/ shows the first-boot wizard; its token is in
# /var/lib/xenweb/setup-token. Safe to run again (keeps secrets, certificate and data).
#
#   sudo deploy/install.sh [--dry-run] [--source DIR] [--server-name NAME]
#                          [--image | --first-boot]
#
# --dry-run prints every step instead of doing it. PostgreSQL is optional: put a
# DATABASE_URL into /etc/xenweb/xenweb.env and run the script again.
# --image installs into an appliance image being built (in a chroot): no service starts
# and nothing secret is made; --first-boot, run by the appliance's first boot, makes what
# each machine must have for itself (secrets, certificate, database, setup token).
set -euo pipefail

SOURCE="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
DRY_RUN=0
MODE=install
SERVER_NAME="$(hostname -f 2>/dev/null || hostname)"
APP=/opt/xenweb
DATA=/var/lib/xenweb
ETC=/etc/xenweb
ENV_FILE="$ETC/xenweb.env"
PACKAGES=(
    xen-system-amd64 libvirt-daemon-system libvirt-daemon-driver-xen libvirt-clients
    redis-server nginx-light openssl rsync sudo
    qemu-utils mtools zstd  # V2V conversion (qemu-img) and guest inspection (FAT, zstd kernels)
)

usage() { sed -n '2,18s/^# \{0,1\}//p' "${BASH_SOURCE[0]}"; }
log() { printf '[install] %s\n' "$*"; }
die() {
    printf '[install] ERROR: %s\n' "$*" >&2
    exit 1
}

while (($#)); do
    case "$1" in
        --dry-run) DRY_RUN=1 ;;
        --source) SOURCE="${2:?--source needs a directory}"; shift ;;
        --server-name) SERVER_NAME="${2:?--server-name needs a name}"; shift ;;
        --image) MODE=image ;;
        --first-boot) MODE=first-boot ;;
        -h | --help) usage; exit 0 ;;
        *) die "unknown option '$1' (see --help)" ;;
    esac
    shift
done

# Runs a command, or only prints it with --dry-run.
run() {
    if ((DRY_RUN)); then
        printf '+ %s\n' "$*"
    else
        "$@"
    fi
}

# Writes stdin to a file (mode, owner) unless it exists; prints the path with --dry-run.
write_once() {
    local path="$1" mode="$2" owner="$3" content
    content="$(cat)"
    if ((DRY_RUN)); then
        printf '+ write %s (mode %s, %s) unless present\n' "$path" "$mode" "$owner"
        return
    fi
    [[ -e "$path" ]] && return
    install -m "$mode" -o "${owner%:*}" -g "${owner#*:}" /dev/null "$path"
    printf '%s\n' "$content" >"$path"
}

# Runs a command line in the app's folder as xenweb, with the appliance's settings.
as_xenweb() { run sudo -u xenweb bash -c "set -a; . $ENV_FILE; set +a; cd $APP && $*"; }

# The same while an image is built: no settings file yet, and no secret may be made
# (a key given here stops Django from generating one into the data folder).
as_xenweb_unconfigured() {
    run sudo -u xenweb env DJANGO_SETTINGS_MODULE=xenweb.settings XENWEB_DATA_DIR="$DATA" \
        SECRET_KEY=image-build-not-a-secret bash -c "cd $APP && $*"
}

preflight() {
    ((DRY_RUN)) || ((EUID == 0)) || die "run as root (sudo $0)"
    [[ -f "$SOURCE/manage.py" && -f "$SOURCE/pyproject.toml" ]] || die "$SOURCE is not a xenweb tree"
    # shellcheck disable=SC1091
    local version_id
    version_id="$(. /etc/os-release && echo "${VERSION_ID:-}")"
    [[ "$version_id" == 12 ]] || log "warning: made for Debian 12, this is '${version_id:-unknown}'"
}

install_packages() {
    log "installing Xen, libvirt's Xen driver, Redis, nginx"
    run env DEBIAN_FRONTEND=noninteractive apt-get update -q
    run env DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends "${PACKAGES[@]}"
}

create_user() {
    log "system user xenweb (in the libvirt group: it manages the local hypervisor)"
    if ! getent passwd xenweb >/dev/null; then
        run useradd --system --home-dir "$DATA" --shell /usr/sbin/nologin xenweb
    fi
    run usermod -a -G libvirt xenweb
    run install -d -m 0750 -o xenweb -g xenweb "$DATA"
    run install -d -m 0750 -o root -g xenweb "$ETC" "$ETC/tls"
}

install_app() {
    log "the application in $APP (its own scripts install the venv and front-end files)"
    run install -d -m 0755 "$APP"
    run rsync -a --delete --exclude .git --exclude .venv --exclude node_modules \
        --exclude /var --exclude static/vendor --exclude /lab --exclude /bench --exclude /tests \
        --exclude __pycache__ "$SOURCE/" "$APP/"
    # Only what the appliance runs on (no browser, no test tools), the venv without extras.
    run env XENWEB_BOOTSTRAP_PROFILE=appliance bash "$APP/scripts/bootstrap.sh"
    run chown -R root:root "$APP"
}

write_secrets() {
    log "secrets and settings in $ENV_FILE (kept when present)"
    local redis_password secret_key allowed="$SERVER_NAME,localhost,127.0.0.1"
    # An appliance is reached by whatever address DHCP gave it: any host name is served
    # (nginx's default server), CSRF and websockets still check the page's own origin.
    [[ "$MODE" == first-boot ]] && allowed='*'
    redis_password="$(openssl rand -hex 24)"
    secret_key="$(openssl rand -base64 48 | tr -d '\n')"
    write_once "$ETC/redis-password" 0640 root:xenweb <<<"$redis_password"
    write_once "$ENV_FILE" 0640 root:xenweb <<EOF_ENV
# xenweb settings (see README): read by every xenweb unit.
DJANGO_SETTINGS_MODULE=xenweb.settings
XENWEB_DATA_DIR=$DATA
XENWEB_SECURE=true
SECRET_KEY=$secret_key
ALLOWED_HOSTS=$allowed
CSRF_TRUSTED_ORIGINS=https://$SERVER_NAME
# nginx in front: its X-Forwarded-For/-Proto are believed, nobody else's.
FORWARDED_ALLOW_IPS=127.0.0.1,::1
REDIS_URL=redis://:$redis_password@127.0.0.1:6379
# The set-up wizard offers this machine's own hypervisor as the first host.
XENWEB_LOCAL_HYPERVISOR=xen:///system
# DATABASE_URL=postgres://xenweb@127.0.0.1:5432/xenweb
EOF_ENV
}

configure_redis() {
    configure_redis_settings
    include_redis_settings
    run systemctl restart redis-server
}

configure_redis_settings() {
    log "Redis on localhost only, with a password"
    local password="(generated)"
    ((DRY_RUN)) || password="$(cat "$ETC/redis-password")"
    write_once /etc/redis/xenweb.conf 0640 redis:redis <<EOF_REDIS
bind 127.0.0.1 -::1
protected-mode yes
requirepass $password
EOF_REDIS
}

include_redis_settings() {
    if ((DRY_RUN)) || ! grep -qx 'include /etc/redis/xenweb.conf' /etc/redis/redis.conf; then
        run sh -c 'echo "include /etc/redis/xenweb.conf" >> /etc/redis/redis.conf'
    fi
}

make_certificate() {
    log "TLS: a self-signed certificate for $SERVER_NAME (replace $ETC/tls/*.pem with yours)"
    if ((DRY_RUN)) || [[ ! -e "$ETC/tls/cert.pem" ]]; then
        run openssl req -x509 -newkey rsa:3072 -sha256 -days 3650 -nodes \
            -keyout "$ETC/tls/key.pem" -out "$ETC/tls/cert.pem" \
            -subj "/CN=$SERVER_NAME" -addext "subjectAltName=DNS:$SERVER_NAME,DNS:localhost"
        run chmod 0640 "$ETC/tls/key.pem"
        run chgrp www-data "$ETC/tls/key.pem"
    fi
}

configure_nginx() {
    install_nginx_site
    run nginx -t
    run systemctl reload-or-restart nginx
}

install_nginx_site() {
    log "nginx site (HTTPS, websockets, unbuffered uploads)"
    run install -m 0644 "$APP/deploy/nginx/xenweb.conf" /etc/nginx/sites-available/xenweb
    run ln -sf /etc/nginx/sites-available/xenweb /etc/nginx/sites-enabled/xenweb
    run rm -f /etc/nginx/sites-enabled/default
}

setup_database() {
    log "database, static files and the first-boot token"
    as_xenweb ".venv/bin/python manage.py migrate --noinput"
    # An image carries its static files already.
    [[ "$MODE" == first-boot ]] || as_xenweb ".venv/bin/python manage.py collectstatic --noinput -v0"
    as_xenweb ".venv/bin/python manage.py first_boot"
}

install_units() {
    copy_units
    run systemctl enable --now libvirtd.service
    run systemctl enable --now xenweb.target
    # An update: the services already ran the old code (PartOf restarts every xenweb unit).
    run systemctl restart xenweb.target
}

copy_units() {
    log "systemd units: xenweb.target starts web, worker, beat and watcher"
    local unit
    for unit in "$APP"/deploy/systemd/*; do
        run install -m 0644 "$unit" /etc/systemd/system/
    done
    # Debian's Xen starts its daemons (xenstored…) from the "xen" init script, which
    # libvirt's unit does not know: libxl needs them running.
    run install -d -m 0755 /etc/systemd/system/libvirtd.service.d
    run install -m 0644 "$APP/deploy/libvirtd-after-xen.conf" \
        /etc/systemd/system/libvirtd.service.d/xen.conf
    # In an image being built systemd does not run: the units are read at its first boot.
    if ((DRY_RUN)) || [[ -d /run/systemd/system ]]; then
        run systemctl daemon-reload
    fi
}

# What an appliance image carries besides the app: its first-boot service and console
# screen, the bridge for guests, the boot loader's defaults (deploy/appliance/).
install_appliance_files() {
    log "appliance: first boot, console screen, bridge xenbr0, boot loader defaults"
    run bash "$APP/deploy/appliance/install-files.sh" "$APP"
}

main() {
    preflight
    case "$MODE" in
        image)
            install_packages
            create_user
            install_app
            include_redis_settings
            as_xenweb_unconfigured ".venv/bin/python manage.py collectstatic --noinput -v0"
            install_nginx_site
            copy_units
            install_appliance_files
            run systemctl enable libvirtd.service xenweb.target
            log "done: the image makes its secrets, certificate and setup token at first boot"
            ;;
        first-boot)
            write_secrets
            configure_redis_settings
            make_certificate
            setup_database
            ;;
        install)
            install_packages
            create_user
            install_app
            write_secrets
            configure_redis
            make_certificate
            setup_database
            configure_nginx
            install_units
            if [[ ! -e /proc/xen/capabilities ]]; then
                log "this system is not running on Xen yet: reboot and choose the Xen entry in GRUB"
            fi
            log "done: open https://$SERVER_NAME/ and enter the setup token from $DATA/setup-token"
            ;;
    esac
}

main

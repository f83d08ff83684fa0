#!/usr/bin/env bash
# Installs what xenweb needs to run and to be tested, and nothing that is already there:
#   1. Debian packages (libvirt, QEMU tools, Redis, a compiler for libvirt-python, node/npm),
#   2. the Python virtualenv .venv with the project and its dev extras (pyproject.toml),
#   3. the front-end packages (package-lock.json) into node_modules/, copied to static/vendor/.
# Each step is skipped when its stamp file, keyed by a hash of its inputs, already exists,
# so a second run takes well under a second.
#
# Environment: PYTHON, the interpreter that creates .venv (default python3);
# XENWEB_BOOTSTRAP_PROFILE=appliance (deploy/install.sh) installs only what the appliance
# runs on and builds with: no browser, no QEMU, no test and lint tools.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"

PYTHON="${PYTHON:-python3}"
PROFILE="${XENWEB_BOOTSTRAP_PROFILE:-dev}"
[[ "$PROFILE" == dev || "$PROFILE" == appliance ]] ||
    { printf '[bootstrap] ERROR: XENWEB_BOOTSTRAP_PROFILE is dev or appliance, not %s\n' "$PROFILE" >&2; exit 1; }
VENV="$ROOT/.venv"
VENDOR="$ROOT/static/vendor"

log() { printf '[bootstrap] %s\n' "$*"; }
die() {
    printf '[bootstrap] ERROR: %s\n' "$*" >&2
    exit 1
}
sha() { sha256sum "$1" | cut -d' ' -f1; }

did_something=0

# --- 1. System packages ------------------------------------------------------------------

APT_PACKAGES=(
    libvirt-dev pkg-config libvirt-daemon libvirt-daemon-driver-qemu libvirt-clients
    qemu-utils qemu-system-x86 redis-server python3-venv python3-dev gcc openssh-client openssh-server
    curl  # tests: uploads and resumed downloads as the README shows them
    make flex bison  # the Xen lab builds its hypervisor from Debian's source (lab/xen/hypervisor.py)
    debootstrap e2fsprogs shellcheck nginx-light
    fdisk  # make appliance: the image's partition table (sfdisk on a file, no loop device)
    ovmf  # UEFI firmware for HVM guests (libvirt picks it by its descriptors)
    # lab/bootdisk.py: a disk that boots like a real machine's (MBR + SYSLINUX on FAT, ext4
    # root), built without mounting: syslinux's mtools installer, mbr.bin, mkfs.vfat, mcopy
    syslinux syslinux-common mtools dosfstools
    zstd  # guest inspection reads zstd-compressed kernels and initramfs (conversions/inspection)
    chromium  # tests/e2e: Playwright drives this system browser (never a downloaded one)
)
if [[ "$PROFILE" == appliance ]]; then
    # libvirt-python is built against libvirt-dev; the rest runs the product.
    APT_PACKAGES=(libvirt-dev pkg-config python3-venv python3-dev gcc qemu-utils mtools zstd)
fi

install_system_packages() {
    if ! command -v dpkg-query >/dev/null 2>&1; then
        log "dpkg-query not found (not a Debian system?): not checking system packages"
        return
    fi
    local missing=() pkg status
    for pkg in "${APT_PACKAGES[@]}"; do
        status="$(dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null || true)"
        [[ "$status" == "install ok installed" ]] || missing+=("$pkg")
    done
    command -v node >/dev/null 2>&1 || missing+=(nodejs)
    command -v npm >/dev/null 2>&1 || missing+=(npm)
    ((${#missing[@]} == 0)) && return

    local sudo=()
    if ((EUID != 0)); then
        if command -v sudo >/dev/null 2>&1; then
            sudo=(sudo)
        else
            printf '[bootstrap] ERROR: these Debian packages are missing: %s\n' "${missing[*]}" >&2
            printf '[bootstrap] Install them as root, then run this again:\n' >&2
            printf '    apt-get update && apt-get install --no-install-recommends %s\n' \
                "${missing[*]}" >&2
            exit 1
        fi
    fi
    log "installing Debian packages: ${missing[*]}"
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive apt-get update -q
    "${sudo[@]}" env DEBIAN_FRONTEND=noninteractive \
        apt-get install -y -q --no-install-recommends "${missing[@]}"
    did_something=1
}

# --- 2. Python virtualenv ----------------------------------------------------------------

install_python_packages() {
    [[ -f pyproject.toml ]] || die "pyproject.toml not found in $ROOT"
    local stamp
    local extras='[dev]'
    [[ "$PROFILE" == appliance ]] && extras=''
    stamp="$VENV/.xenweb-deps-$PROFILE-$(sha pyproject.toml)"

    # A venv whose interpreter no longer starts (e.g. its base Python was removed) is rebuilt.
    if [[ -d "$VENV" ]] && ! "$VENV/bin/python" -c 'import sys' >/dev/null 2>&1; then
        log "the virtualenv $VENV is broken: recreating it"
        rm -rf "$VENV"
    fi
    # An editable install made with setuptools' default finder froze the package list
    # (empty app folders became namespace packages, which Django rejects): redo it.
    if compgen -G "$VENV/lib/python*/site-packages/__editable___xenweb_*_finder.py" >/dev/null; then
        rm -f "$VENV"/.xenweb-deps-*
    fi
    [[ -e "$stamp" ]] && return

    if [[ ! -x "$VENV/bin/python" ]]; then
        command -v "$PYTHON" >/dev/null 2>&1 || die "Python interpreter '$PYTHON' not found (set PYTHON)"
        log "creating the virtualenv $VENV with $PYTHON"
        "$PYTHON" -m venv "$VENV"
    fi
    log "installing the Python packages from pyproject.toml"
    # editable_mode=compat puts the repository itself on sys.path (a .pth file), so
    # packages and apps added later are found without installing again.
    "$VENV/bin/python" -m pip install --disable-pip-version-check --no-input -q \
        --config-settings editable_mode=compat -e ".$extras"
    rm -f "$VENV"/.xenweb-deps-*
    touch "$stamp"
    did_something=1
}

# --- 3. Front-end packages ---------------------------------------------------------------

install_node_packages() {
    [[ -f package-lock.json ]] || die "package-lock.json not found in $ROOT"
    local hash
    hash="$(sha package-lock.json)"

    if [[ ! -e "node_modules/.xenweb-$hash" ]]; then
        command -v npm >/dev/null 2>&1 || die "npm not found"
        log "installing the front-end packages from package-lock.json"
        # npm ci starts from an empty node_modules, so older stamps go with it.
        npm ci --no-audit --no-fund --ignore-scripts --loglevel=error
        touch "node_modules/.xenweb-$hash"
        did_something=1
    fi

    # static/vendor carries the same stamp: it is copied again whenever the lock file
    # changed, or when it is missing or was left half-copied.
    [[ -e "$VENDOR/.xenweb-$hash" ]] && return
    log "copying the front-end files to static/vendor/"
    copy_vendor_files "$hash"
    did_something=1
}

copy_vendor_files() {
    local hash="$1" nm="$ROOT/node_modules" tmp="$ROOT/static/.vendor.tmp"
    rm -rf "$tmp"
    mkdir -p "$tmp"/{bootstrap,bootstrap-icons,htmx,xterm,novnc,uplot}

    # Copies a file; "?" before the source makes it optional.
    put() {
        local src="$1" dest="$2" optional=0
        if [[ "$src" == \?* ]]; then
            optional=1
            src="${src#\?}"
        fi
        if [[ -e "$nm/$src" ]]; then
            cp -R "$nm/$src" "$tmp/$dest"
        elif ((optional == 0)); then
            die "node_modules/$src not found (is package-lock.json up to date?)"
        fi
    }

    # Source maps go along: collectstatic's manifest storage fails on a missing
    # sourceMappingURL target.
    put bootstrap/dist/css/bootstrap.min.css bootstrap/
    put '?bootstrap/dist/css/bootstrap.min.css.map' bootstrap/
    put bootstrap/dist/js/bootstrap.bundle.min.js bootstrap/
    put '?bootstrap/dist/js/bootstrap.bundle.min.js.map' bootstrap/
    put bootstrap-icons/font/bootstrap-icons.min.css bootstrap-icons/
    put bootstrap-icons/font/fonts bootstrap-icons/
    put htmx.org/dist/htmx.min.js htmx/
    put @xterm/xterm/lib/xterm.js xterm/
    put '?@xterm/xterm/lib/xterm.js.map' xterm/
    put @xterm/xterm/css/xterm.css xterm/
    put @novnc/novnc/core novnc/
    put uplot/dist/uPlot.iife.min.js uplot/
    put uplot/dist/uPlot.min.css uplot/
    put '?uplot/LICENSE' uplot/
    put @novnc/novnc/vendor novnc/
    put '?@novnc/novnc/LICENSE.txt' novnc/

    touch "$tmp/.xenweb-$hash"
    rm -rf "$VENDOR"
    mv "$tmp" "$VENDOR"
}

# --- main --------------------------------------------------------------------------------

start=$SECONDS
install_system_packages
install_python_packages
install_node_packages

if ((did_something)); then
    log "done in $((SECONDS - start)) s"
else
    log "everything is present (.venv, node_modules, static/vendor, system packages)"
fi

#!/usr/bin/env bash
# The appliance's console screen (xenweb-console.service): where to point a browser, the
# setup token while set-up is not done, and the TLS certificate's SHA-256 fingerprint to
# compare with the browser's. Written to /etc/issue.d for the gettys on tty1 and the serial
# console (agetty fills in \4{xenbr0} and shows it anew when the address changes) and
# printed once to the console, once the web service answers (the address is worth
# showing only then; at most WAIT_S later it is shown anyway).
set -euo pipefail

WAIT_S=600

DATA=/var/lib/xenweb
CERT=/etc/xenweb/tls/cert.pem
ISSUE=/etc/issue.d/xenweb.issue
BRIDGE=xenbr0

fingerprint="(no certificate yet)"
if [[ -r "$CERT" ]]; then
    fingerprint="$(openssl x509 -in "$CERT" -noout -fingerprint -sha256 | cut -d= -f2)"
fi
if [[ -s "$DATA/setup-token" ]]; then
    token="$(head -n1 "$DATA/setup-token")"
else
    token="(set-up is done)"
fi
# Any HTTP answer of the web service behind nginx means the pages are there.
web_answers() {
    local reply=""
    exec 3<>/dev/tcp/127.0.0.1/8000 || return 1
    printf 'GET /accounts/login/ HTTP/1.0\r\nHost: localhost\r\n\r\n' >&3
    read -r -t 60 reply <&3 || true
    exec 3<&- 3>&-
    [[ "$reply" == HTTP/* ]]
}

for ((waited = 0; waited < WAIT_S; waited += 2)); do
    (web_answers) 2>/dev/null && break
    sleep 2
done
address="$(ip -4 -o addr show dev "$BRIDGE" 2>/dev/null | awk '{split($4, a, "/"); print a[1]; exit}')"

screen() {
    printf 'xenweb appliance: open https://%s/ in a browser\n' "$1"
    printf 'xenweb setup token: %s\n' "$token"
    printf 'xenweb TLS certificate SHA-256: %s\n' "$fingerprint"
}

install -d -m 0755 /etc/issue.d
{ screen "\\4{$BRIDGE}"; echo; } >"$ISSUE.tmp"
mv "$ISSUE.tmp" "$ISSUE"
screen "${address:-<no address yet>}"
agetty --reload 2>/dev/null || true

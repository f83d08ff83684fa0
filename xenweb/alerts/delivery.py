"""Sending an alert beyond the list: e-mail through Django's mail settings, and a webhook
that receives the alert as JSON (POST, 10 s timeout, no redirects followed)."""

from __future__ import annotations

import json
import logging
import urllib.request
from urllib.error import URLError

from django.conf import settings
from django.core.mail import send_mail

from xenweb.alerts.models import Alert, AlertRoute
from xenweb.alerts.services import summary

log = logging.getLogger(__name__)

WEBHOOK_TIMEOUT_S = 10.0


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: object, **kwargs: object) -> None:
        return None


def _subject(alert: Alert) -> str:
    return f"[xenweb] {alert.get_kind_display()}: {alert.message}"[:200]


def send_email(alert: Alert, addresses: list[str]) -> None:
    body = (f"{alert.message}\n\nKind: {alert.get_kind_display()}\nFirst seen: "
            f"{alert.created_at:%Y-%m-%d %H:%M:%S %Z}\nTimes: {alert.count}\n")
    if alert.link and settings.ALERT_BASE_URL:
        body += f"Page: {settings.ALERT_BASE_URL.rstrip('/')}{alert.link}\n"
    send_mail(_subject(alert), body, None, addresses)


def post_webhook(alert: Alert, url: str) -> int:
    """POST the alert; the HTTP status (raises OSError/URLError when it cannot be sent)."""
    if not url.startswith(("http://", "https://")):
        raise ValueError(f"'{url}' is not an http(s) URL.")
    request = urllib.request.Request(  # noqa: S310 (http and https only, checked above)
        url, data=json.dumps({"alert": summary(alert)}).encode(), method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "xenweb-alerts"})
    opener = urllib.request.build_opener(_NoRedirect)
    with opener.open(request, timeout=WEBHOOK_TIMEOUT_S) as response:
        return response.status


def deliver(alert: Alert) -> list[str]:
    """Send the alert by its kind's route; what failed, in words (nothing is raised)."""
    route = AlertRoute.objects.filter(kind=alert.kind).first()
    problems: list[str] = []
    if route is None:
        return problems
    if route.email_list:
        try:
            send_email(alert, route.email_list)
        except (OSError, ValueError) as exc:
            problems.append(f"e-mail to {', '.join(route.email_list)}: {exc}")
    if route.webhook_url:
        try:
            post_webhook(alert, route.webhook_url)
        except (OSError, URLError, ValueError) as exc:
            problems.append(f"webhook {route.webhook_url}: {exc}")
    for problem in problems:
        log.warning("alert %s not delivered: %s", alert.pk, problem)
    return problems

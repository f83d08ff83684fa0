"""Raising, seeing and acknowledging alerts. Raising is cheap and never fails its caller:
the alert is stored, announced on the events websocket (to those who may see it) and handed
to the delivery task (e-mail, webhook) once the caller's transaction commits."""

from __future__ import annotations

import logging
from typing import Any

from celery import current_app
from django.db import transaction
from django.db.models import Q, QuerySet
from django.utils import timezone
from kombu.exceptions import OperationalError
from redis.exceptions import RedisError

from xenweb.alerts.models import Alert, AlertKind, AlertRoute
from xenweb.jobs.models import Job
from xenweb.jobs.visibility import VIEW_ALL, audience, operable_target_types
from xenweb.realtime import EVENTS_GROUP, broadcast

log = logging.getLogger(__name__)

DELIVER_TASK = "xenweb.alerts.tasks.deliver_alert"


def summary(alert: Alert) -> dict[str, Any]:
    return {
        "id": alert.pk, "kind": alert.kind, "kind_label": alert.get_kind_display(),
        "severity": alert.severity, "subject": alert.subject, "message": alert.message,
        "link": alert.link, "count": alert.count,
        "created_at": alert.created_at.isoformat(),
        "last_seen_at": alert.last_seen_at.isoformat(),
        "acknowledged_at": alert.acknowledged_at.isoformat() if alert.acknowledged_at else None,
        "acknowledged_by": alert.acknowledged_by.get_username() if alert.acknowledged_by
        else None,
    }


def visible_alerts(user: Any) -> QuerySet[Alert]:
    alerts = Alert.objects.select_related("acknowledged_by")
    if not (user and user.is_authenticated and user.has_perm("alerts.view_alert")):
        return alerts.none()
    if user.has_perm(VIEW_ALL):
        return alerts
    return alerts.filter(Q(restricted=False) | Q(owner=user)
                         | Q(target_type__in=sorted(operable_target_types(user))))


def open_count(user: Any) -> int:
    return visible_alerts(user).filter(acknowledged_at=None).count()


def raise_alert(kind: AlertKind, subject: str, message: str, *, link: str = "",
                job: Job | None = None) -> Alert:
    """A new alert, or the open one of the same kind and subject counted once more; about
    a job, it is seen by those who see the job."""
    now = timezone.now()
    with transaction.atomic():
        alert = Alert.objects.select_for_update().filter(
            kind=kind, subject=subject, acknowledged_at=None).first()
        if alert is None:
            alert = Alert.objects.create(
                kind=kind, subject=subject, message=message[:1000], link=link,
                restricted=job is not None, owner=job.owner if job else None,
                target_type=job.target_type if job else "")
        else:
            alert.count += 1
            alert.message = message[:1000]
            alert.last_seen_at = now
            alert.link = link or alert.link
            alert.save(update_fields=["count", "message", "last_seen_at", "link"])
        pk = alert.pk
        groups = audience(job) if job is not None else [EVENTS_GROUP]
        transaction.on_commit(lambda: _announce(pk, groups))
    log.info("alert %s %s: %s", kind, subject, message)
    return alert


def acknowledge(alerts: Any, *, user: Any) -> int:
    """Acknowledge the open ones of `alerts` (a queryset); how many were."""
    pks = list(alerts.filter(acknowledged_at=None).values_list("pk", flat=True))
    done = Alert.objects.filter(pk__in=pks, acknowledged_at=None).update(
        acknowledged_at=timezone.now(), acknowledged_by=user)
    if done:
        # Ids only: pages ask for their user's own count again (alerts:count).
        transaction.on_commit(lambda: broadcast([EVENTS_GROUP], {
            "type": "alert.acknowledged", "ids": pks}))
    return done


def _announce(pk: int, groups: list[str]) -> None:
    alert = Alert.objects.select_related("acknowledged_by").filter(pk=pk).first()
    if alert is None:
        return
    broadcast(groups, {"type": "alert.raised", "alert": summary(alert)})
    route = AlertRoute.objects.filter(kind=alert.kind).first()
    if route is None or not (route.email_list or route.webhook_url):
        return
    try:
        current_app.send_task(DELIVER_TASK, args=[pk])
    except (OperationalError, RedisError, OSError) as exc:
        log.warning("alert %s not handed to the delivery task (broker unreachable): %s",
                    pk, exc)

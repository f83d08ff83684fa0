from __future__ import annotations

from celery import shared_task

from xenweb.alerts.delivery import deliver
from xenweb.alerts.models import Alert


@shared_task(name="xenweb.alerts.tasks.deliver_alert", ignore_result=True)
def deliver_alert(alert_id: int) -> list[str]:
    alert = Alert.objects.filter(pk=alert_id).first()
    return deliver(alert) if alert is not None else []

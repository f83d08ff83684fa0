"""The Celery application: the distributed engine for every long job."""

import os

from celery import Celery

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xenweb.settings")

app = Celery("xenweb")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

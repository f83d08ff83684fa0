from django.urls import path

from xenweb.events import EventsConsumer
from xenweb.jobs.consumers import JobConsumer

websocket_urlpatterns = [
    path("ws/jobs/<int:job_id>/", JobConsumer.as_asgi()),
    path("ws/events/", EventsConsumer.as_asgi()),
]

from django.urls import path

from guests.console.text_consumer import GuestConsoleConsumer
from guests.console.vnc_consumer import GuestVncConsumer
from xenweb.events import EventsConsumer
from xenweb.jobs.consumers import JobConsumer

websocket_urlpatterns = [
    path("ws/jobs/<int:job_id>/", JobConsumer.as_asgi()),
    path("ws/events/", EventsConsumer.as_asgi()),
    path("ws/guests/<int:guest_id>/console/", GuestConsoleConsumer.as_asgi()),
    path("ws/guests/<int:guest_id>/vnc/", GuestVncConsumer.as_asgi()),
]

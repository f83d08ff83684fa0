"""Guests' pages under a host's URL, in the "hosts" namespace (see xenweb/urls.py)."""

from django.urls import path

from guests.migration import evacuation_views

urlpatterns = [
    path("<int:pk>/evacuate/", evacuation_views.host_evacuate, name="evacuate"),
]

"""The REST API under /api/v1/ (namespace "api"): the core's routes here, and each app's
from its own API URL module, which registers the app's view sets on a router of its own.

Several apps add routes under one prefix ("guests", "hosts"): each registers its own view
sets there. The API root (GET /api/v1/) lists every prefix with a list route, in this
order.
"""

from typing import Any

from django.urls import include, path
from rest_framework.routers import DefaultRouter, SimpleRouter
from rest_framework.urlpatterns import format_suffix_patterns

import conversions.api_urls
import guests.api.urls
import hosts.api_urls
import inventory.api_urls
import storage.api_urls
from xenweb.accounts.api import MeView
from xenweb.alerts.api import AlertViewSet
from xenweb.appliance.api import SshKeyView
from xenweb.audit.api import AuditViewSet
from xenweb.jobs.api import JobViewSet

router = SimpleRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("audit", AuditViewSet, basename="audit")
router.register("alerts", AlertViewSet, basename="alert")

APPS = (hosts.api_urls, guests.api.urls, inventory.api_urls, storage.api_urls,
        conversions.api_urls)

class Listing(DefaultRouter):
    """The API root's router. Several apps register view sets under one prefix; DRF's root
    keeps the last one, which may have no list route (an app's actions on guests), and then
    leaves the prefix out. Here each prefix names the first of its view sets with a
    collection route (list, or create only: imports)."""

    def get_api_root_view(self, api_urls: object = None) -> Any:
        list_name = self.routes[0].name
        root: dict[str, str] = {}
        for prefix, viewset, basename in self.registry:
            if hasattr(viewset, "list") or hasattr(viewset, "create"):
                root.setdefault(prefix, list_name.format(basename=basename))
        return self.APIRootView.as_view(api_root_dict=root)


listing = Listing()
for registry in (router.registry, *(app.router.registry for app in APPS)):
    listing.registry.extend(registry)

app_name = "api"
urlpatterns = [
    path("me/", MeView.as_view(), name="me"),
    path("appliance/ssh-key/", SshKeyView.as_view(), name="ssh-key"),
    *format_suffix_patterns(router.urls),
    *(path("", include(app)) for app in APPS),
    *format_suffix_patterns([path("", listing.get_api_root_view(),
                                  name=listing.root_view_name)]),
]

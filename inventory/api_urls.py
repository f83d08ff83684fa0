"""inventory's API routes (a host's and a guest's metrics), included under /api/v1/ by
xenweb/api_urls.py."""

from rest_framework.routers import SimpleRouter
from rest_framework.urlpatterns import format_suffix_patterns

from inventory.metrics_api import GuestMetricsViewSet, HostMetricsViewSet

router = SimpleRouter()
router.register("hosts", HostMetricsViewSet, basename="host-metrics")
router.register("guests", GuestMetricsViewSet, basename="guest-metrics")

urlpatterns = format_suffix_patterns(router.urls)

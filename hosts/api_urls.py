"""hosts' API routes, included under /api/v1/ by xenweb/api_urls.py."""

from rest_framework.routers import SimpleRouter
from rest_framework.urlpatterns import format_suffix_patterns

from hosts.api import HostViewSet

router = SimpleRouter()
router.register("hosts", HostViewSet, basename="host")

urlpatterns = format_suffix_patterns(router.urls)

"""guests' API routes, included under /api/v1/ by xenweb/api_urls.py: the guests, their
migration, conflict sets, and the evacuation of a host."""

from rest_framework.routers import SimpleRouter
from rest_framework.urlpatterns import format_suffix_patterns

from guests.api.guests import GuestViewSet
from guests.api.migration import ConflictSetViewSet, GuestMigrationViewSet, HostEvacuationViewSet

router = SimpleRouter()
router.register("hosts", HostEvacuationViewSet, basename="host-evacuation")
router.register("guests", GuestViewSet, basename="guest")
router.register("guests", GuestMigrationViewSet, basename="guest-migration")
router.register("conflict-sets", ConflictSetViewSet, basename="conflictset")

urlpatterns = format_suffix_patterns(router.urls)

from django.urls import include, path
from rest_framework.routers import DefaultRouter, SimpleRouter
from rest_framework.urlpatterns import format_suffix_patterns

from conversions.p2v.api import P2VInventoryView, P2VPublicKeyView, P2VStartView
from conversions.v2v.api import ExportViewSet, GuestExportViewSet, ImportViewSet
from guests.api.guests import GuestViewSet
from guests.api.migration import (
    ConflictSetViewSet,
    GuestMigrationViewSet,
    HostEvacuationViewSet,
)
from hosts.api import HostViewSet
from inventory.metrics_api import GuestMetricsViewSet, HostMetricsViewSet
from storage.api import VolumeViewSet
from storage.api_bootfiles import HostBootFilesViewSet
from storage.api_pools import PoolViewSet
from xenweb.accounts.api import MeView
from xenweb.appliance.api import SshKeyView
from xenweb.audit.api import AuditViewSet
from xenweb.jobs.api import JobViewSet

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("audit", AuditViewSet, basename="audit")
router.register("hosts", HostViewSet, basename="host")
router.register("hosts", HostEvacuationViewSet, basename="host-evacuation")
router.register("guests", GuestViewSet, basename="guest")
router.register("guests", GuestMigrationViewSet, basename="guest-migration")
router.register("conflict-sets", ConflictSetViewSet, basename="conflictset")
router.register("hosts", HostMetricsViewSet, basename="host-metrics")
router.register("guests", GuestMetricsViewSet, basename="guest-metrics")
router.register("pools", PoolViewSet, basename="pool")
router.register("volumes", VolumeViewSet, basename="volume")
router.register("imports", ImportViewSet, basename="import")
router.register("guests", GuestExportViewSet, basename="guest-export")
router.register("exports", ExportViewSet, basename="export")

# Actions on hosts that apps above hosts serve, with the route names ("host-…") they had on
# hosts' HostViewSet: a router of its own, as one router takes each basename only once.
host_actions = SimpleRouter()
host_actions.register("hosts", HostBootFilesViewSet, basename="host")



class VolumeContentWithoutSlash(VolumeViewSet):
    """The content URL without its trailing slash (`curl -T FILE URL` adds the file's name
    to a URL that ends in one); not a second entry of the API schema."""

    schema = None


app_name = "api"
urlpatterns = [
    path("me/", MeView.as_view(), name="me"),
    path("appliance/ssh-key/", SshKeyView.as_view(), name="ssh-key"),
    path("p2v/", P2VStartView.as_view(), name="p2v"),
    path("p2v/inventory/", P2VInventoryView.as_view(), name="p2v-inventory"),
    path("p2v/public-key/", P2VPublicKeyView.as_view(), name="p2v-public-key"),
    path("volumes/<str:pk>/content", VolumeContentWithoutSlash.as_view(
        {"get": "content", "put": "upload"}), name="volume-content-without-slash"),
    path("", include(router.urls)),
    path("", include(format_suffix_patterns(host_actions.urls))),  # as DefaultRouter does
]

"""storage's API routes, included under /api/v1/ by xenweb/api_urls.py: pools, volumes and
a host's boot files."""

from django.urls import path
from rest_framework.routers import SimpleRouter
from rest_framework.urlpatterns import format_suffix_patterns

from storage.api import VolumeViewSet
from storage.api_bootfiles import HostBootFilesViewSet
from storage.api_pools import PoolViewSet

router = SimpleRouter()
router.register("pools", PoolViewSet, basename="pool")
router.register("volumes", VolumeViewSet, basename="volume")

# Actions on hosts storage serves, with the route names ("host-…") they had on hosts'
# HostViewSet: a router of its own (one router takes each basename only once), left out of
# the API root's listing as before.
host_actions = SimpleRouter()
host_actions.register("hosts", HostBootFilesViewSet, basename="host")


class VolumeContentWithoutSlash(VolumeViewSet):
    """The content URL without its trailing slash (`curl -T FILE URL` adds the file's name
    to a URL that ends in one); not a second entry of the API schema."""

    schema = None


urlpatterns = [
    path("volumes/<str:pk>/content", VolumeContentWithoutSlash.as_view(
        {"get": "content", "put": "upload"}), name="volume-content-without-slash"),
    *format_suffix_patterns(router.urls),
    *format_suffix_patterns(host_actions.urls),
]

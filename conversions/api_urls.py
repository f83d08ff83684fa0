"""conversions' API routes (V2V imports and exports, P2V), included under /api/v1/ by
xenweb/api_urls.py."""

from django.urls import path, re_path
from rest_framework.routers import SimpleRouter
from rest_framework.urlpatterns import format_suffix_patterns

from conversions.p2v.api import P2VInventoryView, P2VPublicKeyView, P2VStartView
from conversions.v2v.api import ExportViewSet, GuestExportViewSet, ImportViewSet

router = SimpleRouter()
router.register("imports", ImportViewSet, basename="import")
router.register("guests", GuestExportViewSet, basename="guest-export")
router.register("exports", ExportViewSet, basename="export")

urlpatterns = [
    # A file's name keeps its extension: outside the format suffixes (which took
    # "web.vmx" for "web" in the format "vmx" and answered 404), slash or not.
    re_path(r"^imports/files/(?P<name>[^/].*?)/?$", ImportViewSet.as_view({"put": "upload"}),
            name="import-upload"),
    path("p2v/", P2VStartView.as_view(), name="p2v"),
    path("p2v/inventory/", P2VInventoryView.as_view(), name="p2v-inventory"),
    path("p2v/public-key/", P2VPublicKeyView.as_view(), name="p2v-public-key"),
    *format_suffix_patterns(router.urls),
]

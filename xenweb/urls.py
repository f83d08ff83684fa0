from django.urls import include, path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

import conversions.urls
import guests.host_urls
import hosts.urls
import storage.host_urls
import storage.urls
from xenweb.audit.views import audit_list

urlpatterns = [
    path("", include("dashboard.urls")),
    path("setup/", include("wizard.urls")),
    path("accounts/", include("xenweb.accounts.urls")),
    # The hosts' pages, with those guests and storage add under a host (one namespace).
    path("hosts/", include((hosts.urls.urlpatterns + guests.host_urls.urlpatterns
                            + storage.host_urls.urlpatterns, "hosts"))),
    path("guests/", include("guests.urls")),
    # The conversion pages keep the /storage/ paths and "storage:" names they had before
    # the conversions app existed; storage's own urls do not know them.
    path("storage/", include((storage.urls.urlpatterns + conversions.urls.urlpatterns,
                              "storage"))),
    path("jobs/", include("xenweb.jobs.urls")),
    path("audit/", audit_list, name="audit"),
    path("alerts/", include("xenweb.alerts.urls")),
    path("api/v1/", include("xenweb.api_urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    # The split view serves Swagger UI's settings as a script file: no inline script (CSP).
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"),
         name="api-docs"),
]

handler400 = "xenweb.api_errors.bad_request"
handler404 = "xenweb.api_errors.page_not_found"
handler500 = "xenweb.api_errors.server_error"

from django.urls import include, path
from rest_framework.routers import DefaultRouter

from xenweb.accounts.api import MeView
from xenweb.audit.api import AuditViewSet
from xenweb.jobs.api import JobViewSet

router = DefaultRouter()
router.register("jobs", JobViewSet, basename="job")
router.register("audit", AuditViewSet, basename="audit")

app_name = "api"
urlpatterns = [
    path("me/", MeView.as_view(), name="me"),
    path("", include(router.urls)),
]

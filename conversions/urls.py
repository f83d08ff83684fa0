"""The conversion pages. xenweb/urls.py serves them under /storage/ in the "storage" URL
namespace: their paths and names (storage:p2v, storage:v2v, storage:v2v_export) are older
than this app, and links, bookmarks and templates use them."""

from django.urls import path

from conversions.p2v.views import p2v_page
from conversions.v2v.views import guest_export, v2v_page

urlpatterns = [
    path("p2v/", p2v_page, name="p2v"),
    path("v2v/", v2v_page, name="v2v"),
    path("v2v/export/<int:pk>/", guest_export, name="v2v_export"),
]

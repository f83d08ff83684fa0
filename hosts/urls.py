from django.urls import path

from hosts import views

app_name = "hosts"
# The host pages of the apps above hosts (guests.host_urls: evacuate, storage.host_urls:
# boot-files-dir) join this namespace in xenweb/urls.py.
urlpatterns = [
    path("", views.host_list, name="list"),
    path("add/", views.host_add, name="add"),
    path("test/", views.host_test, name="test"),
    path("<int:pk>/", views.host_detail, name="detail"),
    path("<int:pk>/maintenance/", views.host_maintenance, name="maintenance"),
    path("<int:pk>/migration-uri/", views.host_migration_uri, name="migration_uri"),
    path("<int:pk>/host-key/", views.host_host_key, name="host_key"),
    path("<int:pk>/networks/", views.host_networks, name="networks"),
]

from django.urls import path

from hosts import views

app_name = "hosts"
urlpatterns = [
    path("", views.host_list, name="list"),
    path("add/", views.host_add, name="add"),
    path("test/", views.host_test, name="test"),
    path("<int:pk>/", views.host_detail, name="detail"),
    path("<int:pk>/maintenance/", views.host_maintenance, name="maintenance"),
    path("<int:pk>/migration-uri/", views.host_migration_uri, name="migration_uri"),
    path("<int:pk>/host-key/", views.host_host_key, name="host_key"),
    path("<int:pk>/boot-files-dir/", views.host_boot_files_dir, name="boot_files_dir"),
    path("<int:pk>/evacuate/", views.host_evacuate, name="evacuate"),
    path("<int:pk>/networks/", views.host_networks, name="networks"),
]

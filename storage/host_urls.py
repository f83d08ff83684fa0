"""Storage's pages under a host's URL, in the "hosts" namespace (see xenweb/urls.py)."""

from django.urls import path

from storage import bootfiles_views

urlpatterns = [
    path("<int:pk>/boot-files-dir/", bootfiles_views.host_boot_files_dir,
         name="boot_files_dir"),
]

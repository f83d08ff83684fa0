from django.urls import path, re_path

from guests import views
from guests.api.snapshots import SNAPSHOT_NAME
from guests.console import text_views, vnc_views
from guests.lifecycle import ACTIONS
from guests.placement import views as placement_views
from guests.snapshots import views as snapshot_views

app_name = "guests"
ACTION_RE = "|".join(action for action in ACTIONS if action != "delete")
urlpatterns = [
    path("", views.guest_list, name="list"),
    path("new/", views.guest_create, name="create"),
    path("<int:pk>/", views.guest_detail, name="detail"),
    path("<int:pk>/memory/", views.guest_memory, name="memory"),
    path("<int:pk>/delete/", views.guest_delete, name="delete"),
    re_path(r"^(?P<pk>\d+)/hardware/(?P<change>vcpus|attach-disk|detach-disk|attach-nic|"
            r"detach-nic)/$", views.guest_hardware, name="hardware"),
    path("<int:pk>/labels/", placement_views.guest_labels, name="labels"),
    path("conflict-sets/", placement_views.conflict_sets, name="conflict-sets"),
    path("conflict-sets/new/", placement_views.conflict_set_create, name="conflict-set-create"),
    path("conflict-sets/<int:pk>/delete/", placement_views.conflict_set_delete,
         name="conflict-set-delete"),
    path("<int:pk>/snapshots/", snapshot_views.snapshot_create, name="snapshot-create"),
    re_path(rf"^(?P<pk>\d+)/snapshots/(?P<name>{SNAPSHOT_NAME})/revert/$",
            snapshot_views.snapshot_revert, name="snapshot-revert"),
    re_path(rf"^(?P<pk>\d+)/snapshots/(?P<name>{SNAPSHOT_NAME})/delete/$",
            snapshot_views.snapshot_delete, name="snapshot-delete"),
    path("<int:pk>/console/", text_views.console_page, name="console"),
    path("<int:pk>/vnc/", vnc_views.vnc_page, name="vnc"),
    re_path(rf"^(?P<pk>\d+)/(?P<action>{ACTION_RE})/$", views.guest_action, name="action"),
]

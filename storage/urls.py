from django.urls import path, re_path

from storage import views

app_name = "storage"
urlpatterns = [
    path("", views.pool_list, name="list"),
    path("pools/new/", views.pool_create, name="pool-create"),
    path("pools/<int:pk>/", views.pool_detail, name="pool"),
    path("pools/<int:pk>/volumes/new/", views.volume_create, name="volume-create"),
    re_path(r"^pools/(?P<pk>\d+)/(?P<action>start|stop|autostart|refresh|iso-library|sharing|"
            r"delete)/$", views.pool_action, name="pool-action"),
    re_path(r"^volumes/(?P<pk>\d+)/(?P<action>resize|clone|wipe|delete)/$",
            views.volume_action, name="volume-action"),
]

from django.urls import path, re_path

from storage import views
from storage.p2v.views import p2v_page
from storage.v2v.views import guest_export, v2v_page

app_name = "storage"
urlpatterns = [
    path("", views.pool_list, name="list"),
    path("pools/new/", views.pool_create, name="pool-create"),
    path("p2v/", p2v_page, name="p2v"),
    path("v2v/", v2v_page, name="v2v"),
    path("v2v/export/<int:pk>/", guest_export, name="v2v_export"),
    path("pools/<int:pk>/", views.pool_detail, name="pool"),
    path("pools/<int:pk>/volumes/new/", views.volume_create, name="volume-create"),
    re_path(r"^pools/(?P<pk>\d+)/(?P<action>start|stop|autostart|refresh|iso-library|sharing|"
            r"delete)/$", views.pool_action, name="pool-action"),
    re_path(r"^volumes/(?P<pk>\d+)/(?P<action>resize|clone|wipe|delete)/$",
            views.volume_action, name="volume-action"),
]

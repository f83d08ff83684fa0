from django.urls import path

from wizard import views

app_name = "setup"
urlpatterns = [
    path("", views.token_step, name="token"),
    path("admin/", views.admin_step, name="admin"),
    path("appliance/", views.appliance_step, name="appliance"),
    path("host/", views.host_step, name="host"),
    path("host/test/", views.host_test, name="host-test"),
]

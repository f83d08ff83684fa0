from django.urls import path

from xenweb.alerts import views

app_name = "alerts"
urlpatterns = [
    path("", views.alert_list, name="list"),
    path("count/", views.alert_count, name="count"),
    path("acknowledge/", views.alert_acknowledge, name="acknowledge-all"),
    path("<int:pk>/acknowledge/", views.alert_acknowledge, name="acknowledge"),
    path("routes/<str:kind>/", views.route_save, name="route"),
]

from django.urls import path

from dashboard import views

urlpatterns = [
    path("", views.dashboard, name="dashboard"),
    path("dashboard/jobs/", views.dashboard_jobs, name="dashboard-jobs"),
]

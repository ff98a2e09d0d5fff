"""The web console under /console/: each app contributes its pages."""

from django.contrib.auth import views as auth_views
from django.urls import include, path

from gateway_project import users, views

app_name = "console"

urlpatterns = [
    path("", views.DashboardView.as_view(), name="dashboard"),
    path("login/", views.LoginView.as_view(), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("users/", users.UserListView.as_view(), name="users"),
    path("users/new/", users.UserEditView.as_view(), name="user-new"),
    path("users/<int:pk>/edit/", users.UserEditView.as_view(), name="user-edit"),
    path("sign-ins/", views.AuthEventListView.as_view(), name="auth-events"),
    path("", include("keys.console_urls")),
    path("", include("audit.console_urls")),
    path("", include("routing.console_urls")),
    path("", include("billing.console_urls")),
]

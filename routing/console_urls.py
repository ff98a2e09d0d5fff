from django.urls import path

from keys.models import Client
from routing import auto_route_views, route_views, views

# Relative to /console/, so these never collide with the gateway's own /agents/<slug>/ proxy paths.
urlpatterns = [
    path("agents/", views.AgentListView.as_view(), name="agents"),
    path("agents/new/", views.AgentEditView.as_view(), name="agent-new"),
    path("agents/<int:pk>/edit/", views.AgentEditView.as_view(), name="agent-edit"),
    path("agents/<int:pk>/toggle/", views.AgentToggleView.as_view(), name="agent-toggle"),
    path("agents/<int:pk>/reset-circuit/", views.AgentResetCircuitView.as_view(), name="agent-reset-circuit"),
    path("agents/<int:pk>/forget-cache/", views.ForgetCacheView.as_view(), name="agent-forget-cache"),
    path("clients/<int:pk>/forget-cache/", views.ForgetCacheView.as_view(model=Client), name="client-forget-cache"),
    path("routes/", route_views.RouteListView.as_view(), name="routes"),
    path("routes/new/", route_views.RouteEditView.as_view(), name="route-new"),
    path("routes/<int:pk>/edit/", route_views.RouteEditView.as_view(), name="route-edit"),
    path("routes/<int:pk>/toggle/", route_views.RouteToggleView.as_view(), name="route-toggle"),
    path("routes/<int:pk>/delete/", route_views.RouteDeleteView.as_view(), name="route-delete"),
    path("content-routing/", route_views.KeywordListView.as_view(), name="keywords"),
    path("content-routing/new/", route_views.KeywordEditView.as_view(), name="keyword-new"),
    path("content-routing/<int:pk>/edit/", route_views.KeywordEditView.as_view(), name="keyword-edit"),
    path("content-routing/<int:pk>/delete/", route_views.KeywordDeleteView.as_view(), name="keyword-delete"),
    path("auto-routing/", auto_route_views.AutoRouteListView.as_view(), name="auto-routes"),
    path("auto-routing/new/", auto_route_views.AutoRouteEditView.as_view(), name="auto-route-new"),
    path("auto-routing/<int:pk>/edit/", auto_route_views.AutoRouteEditView.as_view(), name="auto-route-edit"),
    path(
        "auto-routing/<int:pk>/move/<str:direction>/",
        auto_route_views.AutoRouteMoveView.as_view(),
        name="auto-route-move",
    ),
    path("auto-routing/<int:pk>/delete/", auto_route_views.AutoRouteDeleteView.as_view(), name="auto-route-delete"),
]

from django.urls import path

from routing import views

# Relative to /console/, so these never collide with the gateway's own /agents/<slug>/ proxy paths.
urlpatterns = [
    path("agents/", views.AgentListView.as_view(), name="agents"),
    path("agents/new/", views.AgentEditView.as_view(), name="agent-new"),
    path("agents/<int:pk>/edit/", views.AgentEditView.as_view(), name="agent-edit"),
    path("agents/<int:pk>/toggle/", views.AgentToggleView.as_view(), name="agent-toggle"),
]

from django.urls import path

from keys import views

urlpatterns = [
    path("clients/", views.ClientListView.as_view(), name="clients"),
    path("clients/new/", views.ClientEditView.as_view(), name="client-new"),
    path("clients/<int:pk>/", views.ClientDetailView.as_view(), name="client"),
    path("clients/<int:pk>/edit/", views.ClientEditView.as_view(), name="client-edit"),
    path("clients/<int:pk>/keys/new/", views.KeyCreateView.as_view(), name="key-new"),
    path("keys/<int:pk>/issued/", views.KeyIssuedView.as_view(), name="key-issued"),
    path("keys/<int:pk>/revoke/", views.KeyRevokeView.as_view(), name="key-revoke"),
    path("keys/<int:pk>/rotate/", views.KeyRotateView.as_view(), name="key-rotate"),
]

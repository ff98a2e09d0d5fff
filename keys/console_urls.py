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
    path("keys/<int:pk>/roles/", views.KeyRolesView.as_view(), name="key-roles"),
    path("identity-providers/", views.IdentityProviderListView.as_view(), name="identity-providers"),
    path("identity-providers/new/", views.IdentityProviderEditView.as_view(), name="identity-provider-new"),
    path("identity-providers/<int:pk>/edit/", views.IdentityProviderEditView.as_view(), name="identity-provider-edit"),
    path(
        "identity-providers/<int:pk>/delete/",
        views.IdentityProviderDeleteView.as_view(),
        name="identity-provider-delete",
    ),
    path(
        "identity-providers/<int:pk>/check/", views.IdentityProviderCheckView.as_view(), name="identity-provider-check"
    ),
    path("policies/", views.PolicyListView.as_view(), name="policies"),
    path("policies/new/", views.PolicyEditView.as_view(), name="policy-new"),
    path("policies/test/", views.PolicyTestView.as_view(), name="policy-test"),
    path("policies/<int:pk>/edit/", views.PolicyEditView.as_view(), name="policy-edit"),
    path("policies/<int:pk>/delete/", views.PolicyDeleteView.as_view(), name="policy-delete"),
    path("policies/<int:pk>/draft/", views.PolicyDraftView.as_view(), name="policy-draft"),
    path("policies/publish/", views.PolicyPublishView.as_view(), name="policy-publish"),
    path("policies/what-if/", views.WhatIfListView.as_view(), name="policy-what-ifs"),
    path("policies/what-if/<uuid:pk>/", views.WhatIfDetailView.as_view(), name="policy-what-if"),
    path("roles/", views.AgentRoleListView.as_view(), name="roles"),
    path("roles/new/", views.AgentRoleEditView.as_view(), name="role-new"),
    path("roles/<int:pk>/edit/", views.AgentRoleEditView.as_view(), name="role-edit"),
    path("roles/<int:pk>/delete/", views.AgentRoleDeleteView.as_view(), name="role-delete"),
    path("cost-centers/", views.CostCenterListView.as_view(), name="cost-centers"),
    path("cost-centers/new/", views.CostCenterEditView.as_view(), name="cost-center-new"),
    path("cost-centers/<int:pk>/", views.CostCenterDetailView.as_view(), name="cost-center"),
    path("cost-centers/<int:pk>/edit/", views.CostCenterEditView.as_view(), name="cost-center-edit"),
    path("cost-centers/<int:pk>/delete/", views.CostCenterDeleteView.as_view(), name="cost-center-delete"),
    path("plans/", views.PlanListView.as_view(), name="plans"),
    path("plans/new/", views.PlanEditView.as_view(), name="plan-new"),
    path("plans/<int:pk>/edit/", views.PlanEditView.as_view(), name="plan-edit"),
    path("plans/<int:pk>/delete/", views.PlanDeleteView.as_view(), name="plan-delete"),
]

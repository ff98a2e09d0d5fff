from django.urls import path

from billing import report_views, views

urlpatterns = [
    path("budgets/", views.BudgetListView.as_view(), name="budgets"),
    path("budgets/new/", views.BudgetEditView.as_view(), name="budget-new"),
    path("budgets/<int:pk>/", views.BudgetDetailView.as_view(), name="budget"),
    path("budgets/<int:pk>/edit/", views.BudgetEditView.as_view(), name="budget-edit"),
    path("budgets/<int:pk>/delete/", views.BudgetDeleteView.as_view(), name="budget-delete"),
    path(
        "budgets/<int:pk>/rotate-webhook-secret/",
        views.BudgetRotateWebhookSecretView.as_view(),
        name="budget-rotate-webhook-secret",
    ),
    path("alerts/", views.AlertListView.as_view(), name="alerts"),
    path("alerts/<int:pk>/acknowledge/", views.AlertAcknowledgeView.as_view(), name="alert-acknowledge"),
    path("prices/", views.PriceListView.as_view(), name="prices"),
    path("prices/new/", views.PriceEditView.as_view(), name="price-new"),
    path("prices/<int:pk>/edit/", views.PriceEditView.as_view(), name="price-edit"),
    path("prices/<int:pk>/delete/", views.PriceDeleteView.as_view(), name="price-delete"),
    path("reports/", report_views.ReportView.as_view(), name="reports"),
]

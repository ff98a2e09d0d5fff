from django.urls import path

from billing import views

urlpatterns = [
    path("budgets/", views.BudgetListView.as_view(), name="budgets"),
    # A client has at most one budget, so budgets are addressed by the client's pk.
    path("budgets/<int:pk>/edit/", views.BudgetEditView.as_view(), name="budget-edit"),
    path("budgets/<int:pk>/delete/", views.BudgetDeleteView.as_view(), name="budget-delete"),
    path("prices/", views.PriceListView.as_view(), name="prices"),
    path("prices/new/", views.PriceEditView.as_view(), name="price-new"),
    path("prices/<int:pk>/edit/", views.PriceEditView.as_view(), name="price-edit"),
]

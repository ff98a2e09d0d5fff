from django.urls import path

from audit import views

urlpatterns = [
    path("audit/", views.AuditListView.as_view(), name="audit"),
    path("audit/export/", views.AuditExportView.as_view(), name="audit-export"),
    path("audit/verify/", views.AuditVerifyView.as_view(), name="audit-verify"),
    path("audit/<int:pk>/", views.AuditDetailView.as_view(), name="audit-record"),
    path("admin-actions/", views.TrailListView.as_view(), name="trail"),
    path("admin-actions/export/", views.TrailExportView.as_view(), name="trail-export"),
]

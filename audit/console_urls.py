from django.urls import path

from audit import views

urlpatterns = [
    path("audit/", views.AuditListView.as_view(), name="audit"),
    path("audit/export/", views.AuditExportView.as_view(), name="audit-export"),
    path("audit/verify/", views.AuditVerifyView.as_view(), name="audit-verify"),
    path("audit/<int:pk>/", views.AuditDetailView.as_view(), name="audit-record"),
    path("audit/redaction/", views.RedactionRuleListView.as_view(), name="audit-redaction"),
    path("audit/redaction/new/", views.RedactionRuleEditView.as_view(), name="audit-redaction-new"),
    path("audit/redaction/<int:pk>/", views.RedactionRuleEditView.as_view(), name="audit-redaction-edit"),
    path("audit/redaction/<int:pk>/toggle/", views.RedactionRuleToggleView.as_view(), name="audit-redaction-toggle"),
    path("audit/redaction/<int:pk>/delete/", views.RedactionRuleDeleteView.as_view(), name="audit-redaction-delete"),
    path("admin-actions/", views.TrailListView.as_view(), name="trail"),
    path("admin-actions/export/", views.TrailExportView.as_view(), name="trail-export"),
]

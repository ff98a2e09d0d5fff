from django.urls import path

from audit import export_views, retention_views, views

urlpatterns = [
    path("audit/", views.AuditListView.as_view(), name="audit"),
    path("audit/export/", views.AuditExportView.as_view(), name="audit-export"),
    path("audit/verify/", views.AuditVerifyView.as_view(), name="audit-verify"),
    path("audit/<int:pk>/", views.AuditDetailView.as_view(), name="audit-record"),
    path("audit/quarantine/", views.QuarantineListView.as_view(), name="audit-quarantine"),
    path("audit/redaction/", views.RedactionRuleListView.as_view(), name="audit-redaction"),
    path("audit/redaction/new/", views.RedactionRuleEditView.as_view(), name="audit-redaction-new"),
    path("audit/redaction/<int:pk>/", views.RedactionRuleEditView.as_view(), name="audit-redaction-edit"),
    path("audit/redaction/<int:pk>/toggle/", views.RedactionRuleToggleView.as_view(), name="audit-redaction-toggle"),
    path("audit/redaction/<int:pk>/delete/", views.RedactionRuleDeleteView.as_view(), name="audit-redaction-delete"),
    path("audit/retention/", retention_views.RetentionView.as_view(), name="retention"),
    path("audit/retention/run/", retention_views.RetentionRunView.as_view(), name="retention-run"),
    path("audit/retention/<int:pk>/", retention_views.ArchiveView.as_view(), name="retention-archive"),
    path("audit/retention/<int:pk>/verify/", retention_views.ArchiveView.as_view(check=True), name="retention-verify"),
    path(
        "audit/retention/<int:pk>/download/", retention_views.ArchiveDownloadView.as_view(), name="retention-download"
    ),
    path("admin-actions/", views.TrailListView.as_view(), name="trail"),
    path("admin-actions/export/", views.TrailExportView.as_view(), name="trail-export"),
    path("exports/", export_views.ExportListView.as_view(), name="exports"),
    path("exports/<uuid:pk>/", export_views.ExportDetailView.as_view(), name="export-detail"),
    path("exports/<uuid:pk>/status/", export_views.ExportStatusView.as_view(), name="export-status"),
    path("exports/<uuid:pk>/download/", export_views.ExportDownloadView.as_view(), name="export-download"),
]

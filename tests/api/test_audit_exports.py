"""Export jobs in the management API: what a job says before its file exists, and the list's filters."""

from audit.export_jobs import request_export
from audit.models import AuditExport


def test_a_queued_export_has_no_download_url_and_the_schema_says_it_may_be_null(api, admin_user):
    queued = request_export(admin_user, AuditExport.RECORDS, "csv", {}, via="api")  # its task runs after commit
    answer = api.get(f"/api/v1/audit-exports/{queued.pk}/").json()
    assert (answer["status"], answer["download_url"]) == ("queued", None)
    schema = api.get("/api/schema/", {"format": "json"}).json()
    declared = schema["components"]["schemas"]["AuditExport"]["properties"]["download_url"]
    assert (declared["format"], declared["nullable"]) == ("uri", True)


def test_the_export_list_filters_by_the_files_format(api, admin_user):
    request_export(admin_user, AuditExport.RECORDS, "csv", {}, via="api")
    request_export(admin_user, AuditExport.TRAIL, "jsonl", {}, via="api")
    listed = api.get("/api/v1/audit-exports/", {"format": "jsonl"})
    assert listed.status_code == 200, listed.json()
    assert [(job["kind"], job["format"]) for job in listed.json()["results"]] == [("trail", "jsonl")]

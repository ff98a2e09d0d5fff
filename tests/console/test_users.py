"""Admins manage console users and their roles; nobody else may."""

from django.contrib.auth import get_user_model

from audit.models import AdminAction

GOOD_PASSWORD = "a long and unusual passphrase 42"


def test_only_admins_see_and_change_users(admin, operator, compliance):
    assert admin.get("/console/users/").status_code == 200
    for browser in (operator, compliance):
        assert browser.get("/console/users/").status_code == 403
        response = browser.post("/console/users/new/", {"username": "x", "role": "admin", "password": GOOD_PASSWORD})
        assert response.status_code == 403
    assert not get_user_model().objects.filter(username="x").exists()


def test_an_admin_creates_a_user_with_a_role_and_changes_it(admin):
    response = admin.post(
        "/console/users/new/",
        {"username": "cora", "email": "cora@example.com", "role": "compliance", "password": GOOD_PASSWORD,
         "is_active": "on"},
    )  # fmt: skip
    assert response.status_code == 302
    cora = get_user_model().objects.get(username="cora")
    assert cora.check_password(GOOD_PASSWORD) and list(cora.groups.values_list("name", flat=True)) == ["compliance"]
    admin.post(f"/console/users/{cora.pk}/edit/", {"username": "cora", "email": "cora@example.com", "role": "operator",
                                                   "is_active": "on"})  # fmt: skip
    cora.refresh_from_db()
    assert list(cora.groups.values_list("name", flat=True)) == ["operator"] and cora.check_password(GOOD_PASSWORD)
    update = AdminAction.objects.get(action="update", object_type="auth.user")
    assert update.changes == {"roles": [["compliance"], ["operator"]]}
    assert GOOD_PASSWORD not in str(list(AdminAction.objects.values_list("changes", flat=True)))


def test_a_weak_or_missing_password_is_refused(admin):
    for password in ("", "123"):
        response = admin.post("/console/users/new/", {"username": "weak", "role": "operator", "password": password})
        assert response.status_code == 400
    assert not get_user_model().objects.filter(username="weak").exists()

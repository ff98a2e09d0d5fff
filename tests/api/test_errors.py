"""Every management API error is a JSON object with a detail."""


def test_a_validation_error_has_a_detail_and_field_errors(api):
    response = api.post("/api/v1/clients/", {"slug": "acme"}, format="json")
    assert response.status_code == 400
    body = response.json()
    assert body["detail"] == "name: This field is required."
    assert body["name"] == ["This field is required."]


def test_a_missing_object_is_a_json_404(api):
    response = api.get("/api/v1/keys/999999/")
    assert response.status_code == 404
    assert "detail" in response.json()


def test_a_malformed_body_is_a_json_400(api):
    response = api.generic("POST", "/api/v1/clients/", "{not json", content_type="application/json")
    assert response.status_code == 400
    assert "detail" in response.json()


def test_an_api_path_that_matches_no_route_is_a_json_404(api):
    response = api.get("/api/v1/keys/1.5/")
    assert response.status_code == 404
    assert response["Content-Type"] == "application/json"
    assert response.json() == {"detail": "Not found."}


def test_a_console_path_that_matches_no_route_is_still_a_page(admin_user, client):
    client.force_login(admin_user)
    response = client.get("/console/no-such-page/")
    assert response.status_code == 404
    assert response["Content-Type"].startswith("text/html")


def test_a_body_in_a_media_type_the_operation_does_not_take_is_a_declared_415(api):
    response = api.generic("POST", "/api/v1/clients/", "name=Acme", content_type="text/plain")
    assert response.status_code == 415
    assert "detail" in response.json()
    operation = api.get("/api/schema/", {"format": "json"}).json()["paths"]["/api/v1/clients/"]["post"]
    assert operation["responses"]["415"]["content"]["application/json"]["schema"]["$ref"].endswith("/Error")

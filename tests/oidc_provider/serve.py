"""Run the test provider: ``python -m tests.oidc_provider.serve PORT`` (set up afresh in ``OIDC_TEST_DIR``)."""

import json
import os
import sys


def main() -> None:
    port = int(sys.argv[1])
    os.environ["DJANGO_SETTINGS_MODULE"] = "tests.oidc_provider.settings"
    import django

    django.setup()
    from django.contrib.auth import get_user_model
    from django.core.management import call_command
    from django.core.servers.basehttp import run
    from django.core.wsgi import get_wsgi_application
    from oauth2_provider.models import Application

    call_command("migrate", verbosity=0)
    for username in json.loads(os.environ["OIDC_TEST_USERS"]):
        get_user_model().objects.create_user(username, f"{username}@example.com", os.environ["OIDC_TEST_PASSWORD"])
    Application.objects.create(
        name="gateway console", client_id=os.environ["OIDC_TEST_CLIENT_ID"],
        client_secret=os.environ["OIDC_TEST_CLIENT_SECRET"], hash_client_secret=False,
        client_type=Application.CLIENT_CONFIDENTIAL, authorization_grant_type=Application.GRANT_AUTHORIZATION_CODE,
        redirect_uris=os.environ["OIDC_TEST_REDIRECT"], algorithm=Application.RS256_ALGORITHM, skip_authorization=True,
    )  # fmt: skip
    run("127.0.0.1", port, get_wsgi_application(), threading=True)


if __name__ == "__main__":
    main()

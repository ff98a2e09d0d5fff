"""Claims of the test provider: the user's name, e-mail and groups (from ``OIDC_TEST_USERS``)."""

import json
import os

from oauth2_provider.oauth2_validators import OAuth2Validator


class GroupsValidator(OAuth2Validator):
    oidc_claim_scope = None  # every claim in every answer, whatever the scopes

    def get_additional_claims(self, request):
        user = request.user
        groups = json.loads(os.environ["OIDC_TEST_USERS"]).get(user.username, [])
        return {"preferred_username": user.username, "email": user.email, "groups": groups}

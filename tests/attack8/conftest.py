from tests.gateway.conftest import canned  # noqa: F401  (a loopback receiver standing in for a collector)

"""Settings for the agent gateway: one module, every knob from the environment.

With nothing set the project runs embedded (SQLite, in-process counters and
cache, in-memory channel layer, eager Celery). ``DATABASE_URL`` and
``REDIS_URL`` switch it to the production profile (PostgreSQL and Redis).
"""

import hashlib
import hmac
import ipaddress
import os
import secrets
from pathlib import Path

import dj_database_url
from django.core.exceptions import ImproperlyConfigured

from gateway_project.env import (
    envallowlist,
    envbool,
    envfloat,
    envint,
    envkeyring,
    envlist,
    envrate,
    envstr,
    new_fernet_key,
    private_file,
)
from gateway_project.logs import logging_config

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(envstr("GATEWAY_VAR_DIR", str(BASE_DIR / "var")))
VAR_DIR.mkdir(parents=True, exist_ok=True)

DEBUG = envbool("DJANGO_DEBUG", False)
ALLOWED_HOSTS = envlist("DJANGO_ALLOWED_HOSTS", ["127.0.0.1", "localhost", "[::1]", "testserver"])
CSRF_TRUSTED_ORIGINS = envlist("DJANGO_CSRF_TRUSTED_ORIGINS", [])

# --- Deployment security -----------------------------------------------------
# Served beyond this machine (DEBUG off, a host name that is not loopback): then the site is taken to be behind
# TLS (at the load balancer) and every protection below is on unless its variable says otherwise.
_LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "[::1]", "::1", "testserver"}
DEPLOYED = not DEBUG and not set(ALLOWED_HOSTS) <= _LOOPBACK_HOSTS
SECRET_KEY = envstr("DJANGO_SECRET_KEY", "")
if not SECRET_KEY:
    if DEPLOYED:
        # Every process and host must share one key; a file generated on one disk cannot give them that.
        raise ImproperlyConfigured("DJANGO_SECRET_KEY (or DJANGO_SECRET_KEY_FILE) must be set on a deployed gateway.")
    # Embedded runs get a stable per-checkout key instead of a hard-coded one, readable by its owner only.
    SECRET_KEY = private_file(VAR_DIR / "secret_key", lambda: secrets.token_urlsafe(50))
# Keys that encrypt stored upstream credentials and webhook secrets (gateway_project/credentials.py), newest first;
# embedded runs generate one into var/ (0600), a deployed gateway must be given them.
GATEWAY_CREDENTIAL_KEYS = envkeyring("GATEWAY_CREDENTIAL_KEYS")
if not GATEWAY_CREDENTIAL_KEYS:
    if DEPLOYED:
        raise ImproperlyConfigured(
            "GATEWAY_CREDENTIAL_KEYS (or GATEWAY_CREDENTIAL_KEYS_FILE) must be set on a deployed gateway: the keys "
            "that encrypt stored upstream credentials (make one with `manage.py rotate_credentials --new-key`)."
        )
    GATEWAY_CREDENTIAL_KEYS = [private_file(VAR_DIR / "credential_key", new_fernet_key)]
HTTPS = envbool("GATEWAY_HTTPS", DEPLOYED)
SECURE_SSL_REDIRECT = envbool("DJANGO_SECURE_SSL_REDIRECT", HTTPS)
SECURE_REDIRECT_EXEMPT = envlist("DJANGO_SECURE_REDIRECT_EXEMPT", [])  # path regexes, e.g. a load balancer's check
SESSION_COOKIE_SECURE = envbool("DJANGO_SESSION_COOKIE_SECURE", HTTPS)
CSRF_COOKIE_SECURE = envbool("DJANGO_CSRF_COOKIE_SECURE", HTTPS)
SECURE_HSTS_SECONDS = envint("DJANGO_SECURE_HSTS_SECONDS", 31_536_000 if HTTPS else 0, minimum=0)
SECURE_HSTS_INCLUDE_SUBDOMAINS = envbool("DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS", False)
SECURE_HSTS_PRELOAD = envbool("DJANGO_SECURE_HSTS_PRELOAD", False)
# The load balancer terminates TLS and says so in X-Forwarded-Proto; trust it only there.
SECURE_PROXY_SSL_HEADER = (
    ("HTTP_X_FORWARDED_PROTO", "https") if envbool("DJANGO_TRUST_X_FORWARDED_PROTO", HTTPS) else None
)
SESSION_COOKIE_SAMESITE = "Lax"
# The console's pages: scripts only its own or inline with the response's nonce; nothing framed, posted or loaded
# from elsewhere. Empty switches it off.
GATEWAY_CONSOLE_CSP = envstr(
    "GATEWAY_CONSOLE_CSP",
    "default-src 'self'; script-src 'self' 'nonce-{nonce}'; style-src 'self' 'unsafe-inline'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'self'; form-action 'self'; object-src 'none'",
)

INSTALLED_APPS = [
    "daphne",
    "gateway_project.admin_config.GatewayAdminConfig",  # Django admin, read-only (see gateway_project/admin_site.py)
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "django_ratelimit",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "mozilla_django_oidc",
    "channels",
    "gateway_project",
    "keys",
    "routing",
    "billing",
    "audit",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "gateway_project.csp.ConsoleCSPMiddleware",
]

ROOT_URLCONF = "gateway_project.urls"
TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "gateway_project.console.console_context",
                "gateway_project.csp.csp_nonce",
            ],
            "builtins": ["gateway_project.templatetags.money"],  # {{ value|usd }} on every page
        },
    },
]
WSGI_APPLICATION = None
ASGI_APPLICATION = "gateway_project.asgi.application"

# --- Database -------------------------------------------------------------
DATABASE_URL = envstr("DATABASE_URL", "")
if DATABASE_URL:
    # A bounded pool per process (psycopg_pool through Django): under ASGI, sync work runs on many threads,
    # and persistent per-thread connections piled up until PostgreSQL refused everyone. With the pool a
    # process never holds more than GATEWAY_DB_POOL_SIZE connections; a thread that closes its connection
    # gives it back rather than hanging up.
    DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=0)}
    DATABASES["default"].setdefault("OPTIONS", {}).update(
        pool={
            "min_size": envint("GATEWAY_DB_POOL_MIN", 1, minimum=0),
            "max_size": envint("GATEWAY_DB_POOL_SIZE", 10, minimum=1),
            "timeout": envfloat("GATEWAY_DB_POOL_TIMEOUT", 10.0, minimum=0.1),
        },
        application_name=envstr("GATEWAY_DB_APPLICATION_NAME", "agent-gateway"),
    )
else:
    DATABASES = {
        "default": {
            "ENGINE": "django.db.backends.sqlite3",
            "NAME": envstr("SQLITE_PATH", str(VAR_DIR / "gateway.sqlite3")),
            # IMMEDIATE: a transaction takes the write lock when it begins, so two processes writing
            # wait for each other (up to the timeout) instead of failing on a lock upgrade.
            "OPTIONS": {"timeout": 20, "init_command": "PRAGMA journal_mode=WAL;", "transaction_mode": "IMMEDIATE"},
            # A file, not memory, so a gateway started by the tests sees the test data.
            "TEST": {"NAME": envstr("SQLITE_TEST_PATH", str(VAR_DIR / "test.sqlite3"))},
        }
    }
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Redis: cache, counters, channel layer, Celery broker ------------------
REDIS_URL = envstr("REDIS_URL", "")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": {"hosts": [REDIS_URL]}}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CELERY_BROKER_URL = envstr("CELERY_BROKER_URL", REDIS_URL or "memory://")
CELERY_RESULT_BACKEND = envstr("CELERY_RESULT_BACKEND", REDIS_URL or "cache+memory://")
CELERY_TASK_ALWAYS_EAGER = envbool("CELERY_TASK_ALWAYS_EAGER", not REDIS_URL)
CELERY_TASK_EAGER_PROPAGATES = True
CELERY_TIMEZONE = "UTC"
# Beat keeps its last-run times under var/, not in whatever directory it was started from.
CELERY_BEAT_SCHEDULE_FILENAME = str(VAR_DIR / "celerybeat-schedule")
_ROLLUP_SECONDS = envfloat("GATEWAY_ROLLUP_SECONDS", 300.0, minimum=1)
_ALERT_SWEEP_SECONDS = envfloat("GATEWAY_ALERT_SWEEP_SECONDS", 60.0, minimum=1)
_EXPORT_SWEEP_SECONDS = envfloat("GATEWAY_EXPORT_SWEEP_SECONDS", 900.0, minimum=1)
_RETENTION_SECONDS = envfloat("GATEWAY_RETENTION_SECONDS", 3600.0, minimum=1)
_JOB_SWEEP_SECONDS = envfloat("GATEWAY_JOB_SWEEP_SECONDS", 60.0, minimum=1)
# How often beat publishes a signed checkpoint of both audit chains' heads (audit/checkpoints.py): the newest records
# someone who can write the database could remove unnoticed are those written since the last one.
_CHECKPOINT_SECONDS = envfloat("GATEWAY_AUDIT_CHECKPOINT_SECONDS", 300.0, minimum=1)
CELERY_BEAT_SCHEDULE = {
    # Each run expires at the next, so a stopped worker does not come back to a pile of stale ones.
    "roll-up-usage": {
        "task": "billing.tasks.rollup_usage",
        "schedule": _ROLLUP_SECONDS,
        "options": {"expires": _ROLLUP_SECONDS},
    },
    "sweep-budget-alerts": {
        "task": "billing.tasks.sweep_budget_alerts",
        "schedule": _ALERT_SWEEP_SECONDS,
        "options": {"expires": _ALERT_SWEEP_SECONDS},
    },
    "delete-expired-audit-exports": {
        "task": "audit.tasks.delete_expired_exports",
        "schedule": _EXPORT_SWEEP_SECONDS,
        "options": {"expires": _EXPORT_SWEEP_SECONDS},
    },
    "apply-audit-retention": {
        "task": "audit.tasks.apply_audit_retention",
        "schedule": _RETENTION_SECONDS,
        "options": {"expires": _RETENTION_SECONDS},
    },
    "publish-audit-checkpoint": {
        "task": "audit.tasks.publish_audit_checkpoint",
        "schedule": _CHECKPOINT_SECONDS,
        "options": {"expires": _CHECKPOINT_SECONDS},
    },
    "expire-stuck-agent-jobs": {
        "task": "routing.tasks.expire_stuck_jobs",
        "schedule": _JOB_SWEEP_SECONDS,
        "options": {"expires": _JOB_SWEEP_SECONDS},
    },
}

# --- E-mail (budget alerts) -------------------------------------------------
# Without an SMTP host, mail is written as files to var/mail, so the demo shows its alerts without a mail server.
EMAIL_HOST = envstr("EMAIL_HOST", "")
EMAIL_PORT = envint("EMAIL_PORT", 25, minimum=1)
EMAIL_HOST_USER = envstr("EMAIL_HOST_USER", "")
EMAIL_HOST_PASSWORD = envstr("EMAIL_HOST_PASSWORD", "")
EMAIL_USE_TLS = envbool("EMAIL_USE_TLS", False)
EMAIL_USE_SSL = envbool("EMAIL_USE_SSL", False)
if EMAIL_USE_TLS and EMAIL_USE_SSL:
    raise ImproperlyConfigured("EMAIL_USE_TLS and EMAIL_USE_SSL exclude each other: set one")
EMAIL_TIMEOUT = envfloat("EMAIL_TIMEOUT", 10.0, minimum=0.1)
EMAIL_FILE_PATH = envstr("EMAIL_FILE_PATH", str(VAR_DIR / "mail"))
EMAIL_BACKEND = envstr(
    "EMAIL_BACKEND",
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.filebased.EmailBackend",
)
DEFAULT_FROM_EMAIL = envstr("DEFAULT_FROM_EMAIL", "Agent Gateway <gateway@localhost>")

# --- Alerts and webhooks ----------------------------------------------------
# Base URL of the console, for the links in alert e-mails and webhooks.
GATEWAY_CONSOLE_URL = envstr("GATEWAY_CONSOLE_URL", "http://127.0.0.1:8000").rstrip("/")
# Key of the HMAC-SHA256 signature on every webhook; by default derived from SECRET_KEY, never equal to it.
GATEWAY_WEBHOOK_SECRET = (
    envstr("GATEWAY_WEBHOOK_SECRET", "")
    or hmac.new(SECRET_KEY.encode(), b"agent-gateway webhooks", hashlib.sha256).hexdigest()
)
GATEWAY_WEBHOOK_TIMEOUT = envfloat("GATEWAY_WEBHOOK_TIMEOUT", 5.0, minimum=0.1)
# Deliveries of one webhook before it is given up as failed, waiting about base * 2^n seconds (with jitter) between.
GATEWAY_WEBHOOK_MAX_ATTEMPTS = envint("GATEWAY_WEBHOOK_MAX_ATTEMPTS", 5, minimum=1)
GATEWAY_WEBHOOK_BACKOFF_SECONDS = envfloat("GATEWAY_WEBHOOK_BACKOFF_SECONDS", 10.0, minimum=0)
GATEWAY_WEBHOOK_BACKOFF_MAX_SECONDS = envfloat("GATEWAY_WEBHOOK_BACKOFF_MAX_SECONDS", 600.0, minimum=0)

# --- Async agent jobs (POST /v1/agent/invoke with "async": true) ------------
# A job not started within this many seconds is failed unrun; its budget reservation is held this long plus the
# agent's timeout and a minute.
GATEWAY_JOB_MAX_QUEUE_SECONDS = envfloat("GATEWAY_JOB_MAX_QUEUE_SECONDS", 600.0, minimum=1)
# Hosts a job's webhook_url may name ("hooks.example.com"; ".example.com" for its subdomains). Empty: any host whose
# addresses are all public. Listed hosts may also be internal (they join GATEWAY_WEBHOOK_ALLOWED_HOSTS).
GATEWAY_JOB_WEBHOOK_HOSTS = envallowlist("GATEWAY_JOB_WEBHOOK_HOSTS", [])

# --- Outbound addresses (gateway_project/outbound.py) -------------------------
# Every URL an admin or client configures is refused when it (or what its name resolves to) is loopback, private,
# link-local, cloud metadata, reserved, CGNAT or an IPv6 form of one of those, unless listed here: networks
# ("10.0.0.0/8", "::1") and host names ("hooks.example.com", ".example.com"). A metadata address passes only when
# listed exactly. Agent upstreams are usually internal: list their networks. A gateway served only on loopback
# names (the embedded demo, the tests) or with DEBUG may call loopback upstreams; a deployed one only what is listed.
GATEWAY_UPSTREAM_ALLOWED_NETWORKS = envallowlist(
    "GATEWAY_UPSTREAM_ALLOWED_NETWORKS", [] if DEPLOYED else ["127.0.0.0/8", "::1"]
)
# Budget and job webhooks: nothing internal by default.
GATEWAY_WEBHOOK_ALLOWED_HOSTS = envallowlist("GATEWAY_WEBHOOK_ALLOWED_HOSTS", []) + GATEWAY_JOB_WEBHOOK_HOSTS

# --- Audit exports ----------------------------------------------------------
# Exports matching more rows than this are written to a file by a Celery task instead of streamed in the response.
GATEWAY_EXPORT_STREAM_MAX_ROWS = envint("GATEWAY_EXPORT_STREAM_MAX_ROWS", 10_000, minimum=0)
# Where those files are written (gzipped CSV or JSON Lines), and how long their requester may download them.
GATEWAY_EXPORT_DIR = Path(envstr("GATEWAY_EXPORT_DIR", str(VAR_DIR / "exports")))
GATEWAY_EXPORT_TTL_HOURS = envfloat("GATEWAY_EXPORT_TTL_HOURS", 24.0, minimum=0)

# --- Audit retention ----------------------------------------------------------
# Days request records are kept before the retention job archives and deletes them; 0 keeps them for ever.
# A client's own audit_retention_days overrides it. The admin-action trail is never removed.
GATEWAY_AUDIT_RETENTION_DAYS = envint("GATEWAY_AUDIT_RETENTION_DAYS", 90, minimum=0)
# Where the archives (gzipped JSON Lines, one file per run) are written; keep it on durable storage.
GATEWAY_ARCHIVE_DIR = Path(envstr("GATEWAY_ARCHIVE_DIR", str(VAR_DIR / "archive")))
# Archived records are deleted this many per transaction, so no lock is held for long.
GATEWAY_RETENTION_BATCH = envint("GATEWAY_RETENTION_BATCH", 5000, minimum=1)
# At most this many records go into one run's archive; the next run takes the rest (bounds a run's time and memory).
GATEWAY_RETENTION_MAX_RECORDS = envint("GATEWAY_RETENTION_MAX_RECORDS", 500_000, minimum=1)

# --- Audit tamper evidence (audit/chain.py, audit/checkpoints.py) ------------------
# Keys that are never in the database, so that someone who can write it cannot forge the chains or their checkpoints.
# Embedded runs generate them under var/ (mode 0600); a deployed gateway must be given them.


def _audit_secret(name: str, file_name: str, generate) -> str:
    """The variable's value (or its _FILE's); else, unless deployed, a value generated once into var/ (0600)."""
    value = envstr(name, "")
    if value:
        return value
    if DEPLOYED:
        raise ImproperlyConfigured(
            f"{name} (or {name}_FILE) must be set on a deployed gateway: keep it out of the database and off its "
            f"backups (see README, Tamper evidence)."
        )
    path = VAR_DIR / file_name
    if not path.exists():
        part = path.with_name(f".{file_name}.{os.getpid()}")
        fd = os.open(part, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as handle:
            handle.write(generate() + "\n")
        try:
            os.link(part, path)  # never replaces a key another process made first
        except FileExistsError:
            pass
        finally:
            os.unlink(part)
    return path.read_text().strip()


def _secret_ring(name: str, text: str, check) -> list[bytes]:
    """Keys separated by commas or white space, newest first, each as ``check`` makes it; at least one."""
    keys = [check(part) for part in text.replace(",", " ").split()]
    if not keys:
        raise ImproperlyConfigured(f"{name} holds no key")
    return keys


def _chain_key(text: str) -> bytes:
    if len(text) < 32:
        raise ImproperlyConfigured("GATEWAY_AUDIT_CHAIN_KEY: every key must be at least 32 characters")
    return text.encode()


def _checkpoint_seed(text: str) -> bytes:
    try:
        seed = bytes.fromhex(text)
    except ValueError:
        seed = b""
    if len(seed) != 32:
        raise ImproperlyConfigured("GATEWAY_AUDIT_CHECKPOINT_KEY: every key is 64 hex digits (a 32-byte seed)")
    return seed


# HMAC keys of the audit chains, newest first (commas or white space between; a _FILE may list one per line): new
# records are hashed with the first, older records verify with the key their chain_key_id names. Each is at least
# 32 characters, e.g. from `openssl rand -hex 32`.
GATEWAY_AUDIT_CHAIN_KEYS = _secret_ring(
    "GATEWAY_AUDIT_CHAIN_KEY",
    _audit_secret("GATEWAY_AUDIT_CHAIN_KEY", "audit_chain_key", lambda: secrets.token_hex(32)),
    _chain_key,
)
# Ed25519 private keys that sign the checkpoints, newest first, each its 32-byte seed in hex (`openssl rand -hex 32`);
# monitors verify with the public key (`manage.py audit_checkpoint --public-key`). Older keys verify older checkpoints.
GATEWAY_AUDIT_CHECKPOINT_KEYS = _secret_ring(
    "GATEWAY_AUDIT_CHECKPOINT_KEY",
    _audit_secret("GATEWAY_AUDIT_CHECKPOINT_KEY", "audit_checkpoint_key", lambda: secrets.token_hex(32)),
    _checkpoint_seed,
)
GATEWAY_AUDIT_CHECKPOINT_SECONDS = _CHECKPOINT_SECONDS
# A bearer token with which an external monitor may read GET /api/v1/audit/checkpoint/ and nothing else; empty: only
# admin and compliance users may.
GATEWAY_AUDIT_MONITOR_TOKEN = envstr("GATEWAY_AUDIT_MONITOR_TOKEN", "")

# --- Auth, i18n, static ----------------------------------------------------
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LANGUAGE_CODE = "en-us"
TIME_ZONE = envstr("GATEWAY_TIME_ZONE", "UTC")
USE_I18N = True
USE_TZ = True
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
# Tests and first runs before collectstatic still get their files.
WHITENOISE_USE_FINDERS = True
WHITENOISE_AUTOREFRESH = DEBUG
LOGIN_URL = "console:login"
LOGIN_REDIRECT_URL = "console:dashboard"
LOGOUT_REDIRECT_URL = "console:login"
# The sign-in throttle of the console and Django admin (gateway_project/signin.py): attempts per client address (the
# real one, behind GATEWAY_TRUSTED_PROXIES), and failed attempts per username from any address.
LOGIN_RATE = envrate("GATEWAY_LOGIN_RATE", "10/m")
LOGIN_USERNAME_RATE = envrate("GATEWAY_LOGIN_USERNAME_RATE", "20/h")
# Console sign-in through an OpenID Connect provider (gateway_project/oidc.py), beside local accounts: on when
# GATEWAY_OIDC_CLIENT_ID is set. The provider's endpoints are given (no discovery at run time); its groups claim maps
# to console roles ("group=role,group=role"); someone whose groups map to none is not let in.
OIDC_RP_CLIENT_ID = envstr("GATEWAY_OIDC_CLIENT_ID")
OIDC_RP_CLIENT_SECRET = envstr("GATEWAY_OIDC_CLIENT_SECRET")
OIDC_OP_AUTHORIZATION_ENDPOINT = envstr("GATEWAY_OIDC_AUTHORIZATION_URL")
OIDC_OP_TOKEN_ENDPOINT = envstr("GATEWAY_OIDC_TOKEN_URL")
OIDC_OP_USER_ENDPOINT = envstr("GATEWAY_OIDC_USERINFO_URL")
OIDC_OP_JWKS_ENDPOINT = envstr("GATEWAY_OIDC_JWKS_URL")
OIDC_RP_SIGN_ALGO = envstr("GATEWAY_OIDC_SIGN_ALGORITHM", "RS256")
OIDC_RP_SCOPES = envstr("GATEWAY_OIDC_SCOPES", "openid email profile")
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_TIMEOUT = 10
LOGIN_REDIRECT_URL_FAILURE = "/console/login/?sso=failed"
GATEWAY_OIDC_NAME = envstr("GATEWAY_OIDC_NAME", "single sign-on")
GATEWAY_OIDC_GROUPS_CLAIM = envstr("GATEWAY_OIDC_GROUPS_CLAIM", "groups")
GATEWAY_OIDC_ROLE_MAP = {
    group.strip(): role.strip()
    for group, _, role in (entry.partition("=") for entry in envlist("GATEWAY_OIDC_ROLE_MAP", []))
    if group.strip()
}
_unknown_roles = sorted(set(GATEWAY_OIDC_ROLE_MAP.values()) - {"admin", "operator", "compliance"})
if _unknown_roles:
    raise ImproperlyConfigured(f"GATEWAY_OIDC_ROLE_MAP names no role {', '.join(_unknown_roles)}: use admin, "
                               "operator or compliance.")  # fmt: skip
if OIDC_RP_CLIENT_ID:
    _missing = [name for name, value in [
        ("GATEWAY_OIDC_AUTHORIZATION_URL", OIDC_OP_AUTHORIZATION_ENDPOINT),
        ("GATEWAY_OIDC_TOKEN_URL", OIDC_OP_TOKEN_ENDPOINT),
        ("GATEWAY_OIDC_USERINFO_URL", OIDC_OP_USER_ENDPOINT), ("GATEWAY_OIDC_JWKS_URL", OIDC_OP_JWKS_ENDPOINT),
        ("GATEWAY_OIDC_ROLE_MAP", GATEWAY_OIDC_ROLE_MAP),
    ] if not value]  # fmt: skip
    if _missing:
        raise ImproperlyConfigured(f"GATEWAY_OIDC_CLIENT_ID is set: set {', '.join(_missing)} too.")
AUTHENTICATION_BACKENDS = ["django.contrib.auth.backends.ModelBackend"] + (
    ["gateway_project.oidc.ConsoleOIDCBackend"] if OIDC_RP_CLIENT_ID else []
)
# Days sign-in events (gateway_project.AuthEvent) are kept; the hourly retention task deletes older ones. 0: for ever.
GATEWAY_AUTH_EVENT_RETENTION_DAYS = envint("GATEWAY_AUTH_EVENT_RETENTION_DAYS", 365, minimum=0)
# Seconds a new key's raw value waits, encrypted in the cache, for the one page view that shows it.
GATEWAY_SECRET_HANDOFF_SECONDS = envint("GATEWAY_SECRET_HANDOFF_SECONDS", 300, minimum=10, maximum=3600)
# HSTS for every subdomain and preloading reach beyond the gateway (other sites of the company's domain; browsers
# ship the preload list): a deployer opts in (DJANGO_SECURE_HSTS_INCLUDE_SUBDOMAINS=1, DJANGO_SECURE_HSTS_PRELOAD=1),
# so the checks' nudges towards them are not defects of ours. django-ratelimit does not list Django's own Redis
# cache, which has the atomic increment it needs.
SILENCED_SYSTEM_CHECKS = ["security.W005", "security.W021", "django_ratelimit.W001"]
if not REDIS_URL:
    # The embedded profile is one process, so its in-process cache is shared by all of it.
    SILENCED_SYSTEM_CHECKS += ["django_ratelimit.E003"]

# --- REST API ---------------------------------------------------------------
# A new management API token expires this many days after issue (0: tokens never expire unless issued so).
GATEWAY_API_TOKEN_DAYS = envint("GATEWAY_API_TOKEN_DAYS", 90, minimum=0, maximum=36_500)
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "keys.authentication.ApiTokenAuthentication",  # hashed, expiring tokens (keys.api_tokens)
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": [
        "rest_framework.permissions.IsAuthenticated",
        "gateway_project.permissions.RolePermission",
    ],
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_PARSER_CLASSES": [
        "gateway_project.parsers.JSONParser",  # DRF's, with deep nesting a 400
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    "DEFAULT_PAGINATION_CLASS": "gateway_project.pagination.BoundedLimitOffsetPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "gateway_project.schema.GatewayAutoSchema",
    "EXCEPTION_HANDLER": "gateway_project.api.exception_handler",
    # Requests per user of the management API (callers without a valid token are refused before this), and
    # per user of its costly actions: a chain verification reads every record, an export job writes them all.
    "DEFAULT_THROTTLE_CLASSES": [
        "rest_framework.throttling.UserRateThrottle",
        "gateway_project.throttles.ActionRateThrottle",
    ],
    "DEFAULT_THROTTLE_RATES": {
        "user": envstr("GATEWAY_API_USER_RATE", "1200/min"),
        "verify": envrate("GATEWAY_VERIFY_RATE", "20/hour"),
        "export": envrate("GATEWAY_EXPORT_RATE", "10/hour"),
    },
}
SPECTACULAR_SETTINGS = {
    "TITLE": "Agent Gateway management API",
    "DESCRIPTION": "Manage clients, API keys, agents, budgets and prices; read the audit log.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and its docs pages are for staff, as the API is: a role, by session or token.
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated", "gateway_project.permissions.RolePermission"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # A budget alert's e-mail and webhook share one set of delivery states: one enum, one name.
    "ENUM_NAME_OVERRIDES": {
        "DeliveryStatusEnum": "billing.models.BudgetAlert.DELIVERY",
        # Choice sets that share a field name with another ("kind", "status") get names of their own.
        "ApiKeyStatusEnum": "keys.api.KEY_STATUSES",
        "AuditExportKindEnum": "audit.models.AuditExport.KIND_CHOICES",
        "AuditExportStatusEnum": "audit.models.AuditExport.STATUS_CHOICES",
    },
}

# --- Gateway ---------------------------------------------------------------
_max_answer_seconds = envfloat("GATEWAY_MAX_ANSWER_SECONDS", 600.0, minimum=1.0)


def _networks(name: str, default: list[str]) -> list:
    try:
        return [ipaddress.ip_network(entry.strip("[]"), strict=False) for entry in envlist(name, default)]
    except ValueError as error:
        raise ImproperlyConfigured(f"{name}: {error}") from None


GATEWAY = {
    # Largest request body the proxy accepts, in bytes (413 above it).
    "MAX_BODY_BYTES": envint("GATEWAY_MAX_BODY_BYTES", 1_048_576, minimum=1),
    # How long a process trusts its local copy of a key snapshot, in seconds.
    "KEY_CACHE_SECONDS": envfloat("GATEWAY_KEY_CACHE_SECONDS", 1.0, minimum=0),
    # How often agents and prices are re-read into the in-memory routing table.
    "CONFIG_REFRESH_SECONDS": envfloat("GATEWAY_CONFIG_REFRESH_SECONDS", 2.0, minimum=0.1),
    # Identity providers' signing keys (JWKS): fetched again once this old, and when a token names a key id not
    # held, but no more often than the minimum (tokens with made-up key ids cannot make the gateway hammer it).
    "JWKS_CACHE_SECONDS": envfloat("GATEWAY_JWKS_CACHE_SECONDS", 600.0, minimum=1),
    "JWKS_MIN_REFETCH_SECONDS": envfloat("GATEWAY_JWKS_MIN_REFETCH_SECONDS", 10.0, minimum=0),
    # Audit/usage writer: flush at least this often, or at this many records.
    "FLUSH_SECONDS": envfloat("GATEWAY_FLUSH_SECONDS", 0.2, minimum=0.01),
    "FLUSH_BATCH": envint("GATEWAY_FLUSH_BATCH", 500, minimum=1),
    # Characters of each request's input and output kept, redacted, in its audit record; 0 keeps none.
    # At most 200: the width of the preview columns (audit.models.PREVIEW_LENGTH).
    "PREVIEW_LENGTH": envint("GATEWAY_PREVIEW_LENGTH", 200, minimum=0, maximum=200),
    # Default upstream timeout when an agent does not set its own, in seconds.
    "UPSTREAM_TIMEOUT": envfloat("GATEWAY_UPSTREAM_TIMEOUT", 60.0, minimum=0.1),
    "UPSTREAM_CONNECT_TIMEOUT": envfloat("GATEWAY_UPSTREAM_CONNECT_TIMEOUT", 5.0, minimum=0.1),
    "UPSTREAM_MAX_CONNECTIONS": envint("GATEWAY_UPSTREAM_MAX_CONNECTIONS", 512, minimum=1),
    # Largest upstream answer the gateway reads whole (composed calls, error bodies); streams pass through unbounded.
    # The longest a request may take, its answer (a stream) included; its reservation is held that long (+60 s).
    "MAX_ANSWER_SECONDS": _max_answer_seconds,
    # The longest a WebSocket session may last (closed 1008 session_deadline after); its slots are counted that long
    # (+60 s). By default as long as a request, so that a crashed process's slots lapse no later than they did.
    "MAX_SESSION_SECONDS": envfloat("GATEWAY_MAX_SESSION_SECONDS", _max_answer_seconds, minimum=1.0),
    # The longest a request's body may take to arrive once the caller is let in (uvicorn) or its head has arrived
    # (Daphne, which reads it whole first): 408 after (slow-body clients).
    "BODY_READ_SECONDS": envfloat("GATEWAY_BODY_READ_SECONDS", 30.0, minimum=0.1),
    # A request's head (request line and headers): 431 past this size, 408 past this time from its first byte.
    "MAX_HEAD_BYTES": envint("GATEWAY_MAX_HEAD_BYTES", 65536, minimum=4096),
    "HEAD_READ_SECONDS": envfloat("GATEWAY_HEAD_READ_SECONDS", 20.0, minimum=0.1),
    # Daphne sends an answer as fast as its client takes it; a client that has not taken what is buffered for it
    # (64 KiB and the last chunk or frame) within this long is cut off. uvicorn waits for it until the deadline.
    "CLIENT_WRITE_SECONDS": envfloat("GATEWAY_CLIENT_WRITE_SECONDS", 60.0, minimum=0.1),
    "MAX_UPSTREAM_ANSWER_BYTES": envint("GATEWAY_MAX_UPSTREAM_ANSWER_BYTES", 32 * 1024 * 1024, minimum=1024),
    # "aiohttp" (httpx API over aiohttp, the fast default) or "httpx" (httpcore).
    "HTTP_TRANSPORT": envstr("GATEWAY_HTTP_TRANSPORT", "aiohttp"),
    # Input an upstream may bill for content the body's size does not show, reserved (and allowed as a charge) per
    # part: an image (a URL, a file, or pixels a small base64 can hold; gpt-4o-mini counts a high-detail image as
    # up to ~25,500 tokens), and a document or file (a PDF by URL or id: up to a model's whole context window).
    "IMAGE_INPUT_TOKENS": envint("GATEWAY_IMAGE_INPUT_TOKENS", 25_600, minimum=0),
    "DOCUMENT_INPUT_TOKENS": envint("GATEWAY_DOCUMENT_INPUT_TOKENS", 200_000, minimum=0),
    # Output tokens assumed for a request that sets no max_tokens, when reserving its worst-case cost.
    "DEFAULT_MAX_OUTPUT_TOKENS": envint("GATEWAY_DEFAULT_MAX_OUTPUT_TOKENS", 1024, minimum=1),
    # Agent used by /v1/agent/invoke when content names no capability.
    "DEFAULT_AGENT": envstr("GATEWAY_DEFAULT_AGENT", "research"),
    # Redis key prefix, so several gateways can share one Redis.
    "REDIS_PREFIX": envstr("GATEWAY_REDIS_PREFIX", "gw"),
    # Where the writer keeps batches the database refused until it takes them again (local disk).
    "SPOOL_DIR": Path(envstr("GATEWAY_SPOOL_DIR", str(VAR_DIR / "spool"))),
    # How many proxies (load balancers) stand in front of the gateway: the client's address is the right-most
    # X-Forwarded-For hop none of them added. 0 ignores the header. GATEWAY_TRUST_FORWARDED_FOR=true means 1.
    "TRUSTED_PROXIES": envint(
        "GATEWAY_TRUSTED_PROXIES", 1 if envbool("GATEWAY_TRUST_FORWARDED_FOR", False) else 0, minimum=0, maximum=10
    ),
    # Host names that serve only the gateway (/v1/, /agents/, path routes): the console, the management API and
    # Django admin answer 404 there, so an agent's answer never shares an origin with a signed-in admin.
    "PROXY_ONLY_HOSTS": envlist("GATEWAY_PROXY_ONLY_HOSTS", []),
    # Failed authentications (no key, an unknown key) allowed per client address and minute before 429.
    "AUTH_FAILURES_PER_MINUTE": envint("GATEWAY_AUTH_FAILURES_PER_MINUTE", 60, minimum=1),
    # An IPv6 client's failed authentications count against its network of this many bits (one subscriber's
    # /64 by default: rotating through its own addresses is not a new address). IPv4: each address.
    "AUTH_FAILURE_IPV6_PREFIX": envint("GATEWAY_AUTH_FAILURE_IPV6_PREFIX", 64, minimum=1, maximum=128),
    # Usage reports roll today's usage up again when its rollup is older than this, in seconds.
    "ROLLUP_MAX_AGE": envfloat("GATEWAY_ROLLUP_MAX_AGE", 60.0, minimum=0),
    # The exact response cache (routing/response_cache.py; README "Response cache"): what the in-process store
    # (no Redis) may hold in all, and the temperature above which a request is answered fresh unless its agent
    # allows any (a request that sets none is taken at the providers' default, 1).
    "CACHE": {
        "MEMORY_BYTES": envint("GATEWAY_CACHE_MEMORY_BYTES", 64 * 1024 * 1024, minimum=0),
        "MAX_TEMPERATURE": envfloat("GATEWAY_CACHE_MAX_TEMPERATURE", 1.0, minimum=0),
    },
    # Prometheus metrics (gateway_project/metrics.py; README "Metrics").
    "METRICS": {
        "ENABLED": envbool("GATEWAY_METRICS", True),
        # /metrics answers a scraper that sends this bearer token, or one from these networks.
        "TOKEN": envstr("GATEWAY_METRICS_TOKEN", ""),
        "ALLOW_NETWORKS": _networks("GATEWAY_METRICS_ALLOW", ["127.0.0.0/8", "::1/128"]),
        # Distinct label values each process keeps before counting the rest as "other".
        "MAX_CLIENTS": envint("GATEWAY_METRICS_MAX_CLIENTS", 100, minimum=1),
        "MAX_AGENTS": envint("GATEWAY_METRICS_MAX_AGENTS", 200, minimum=1),
        "MAX_MODELS": envint("GATEWAY_METRICS_MAX_MODELS", 200, minimum=1),
        "MAX_CODES": envint("GATEWAY_METRICS_MAX_CODES", 200, minimum=1),
        # How often each process hands what it counted to the exposition (a scrape sees it at most this late).
        "FLUSH_SECONDS": envfloat("GATEWAY_METRICS_FLUSH_SECONDS", 1.0, minimum=0.01),
    },
}

# The directory every process of this host writes its metric values to (prometheus-client's multiprocess mode):
# rungateway's workers and a Celery worker beside them. rungateway picks one under GATEWAY_VAR_DIR when unset.
if envstr("GATEWAY_METRICS_DIR", ""):
    os.environ.setdefault("PROMETHEUS_MULTIPROC_DIR", envstr("GATEWAY_METRICS_DIR", ""))

# Log lines (gateway_project/logs.py): JSON where a collector reads them (a deployed gateway), plain text for a
# person at a terminal otherwise. GATEWAY_LOG_LEVEL unset: the gateway's and the servers' loggers at INFO (each
# request has its access line), every other at WARNING.
# GATEWAY_SERVER_ACCESS_LOG (``rungateway --access-log``): Daphne's or uvicorn's own line for every request too.
SERVER_ACCESS_LOG = envbool("GATEWAY_SERVER_ACCESS_LOG", False)
LOGGING = logging_config(
    envstr("GATEWAY_LOG_LEVEL", ""), envstr("GATEWAY_LOG_FORMAT", "json" if DEPLOYED else "plain"), SERVER_ACCESS_LOG
)


def _otlp_traces_endpoint() -> str:
    """The OTLP/HTTP endpoint spans are sent to, or "" (tracing off): the standard variables, the traces' own first;
    the general one is a base URL that ``/v1/traces`` is added to, as the OpenTelemetry specification says."""
    exporter = envstr("OTEL_TRACES_EXPORTER", "otlp").strip().lower()
    if envbool("OTEL_SDK_DISABLED", False) or exporter == "none":
        return ""
    if exporter != "otlp":
        raise ImproperlyConfigured(f"OTEL_TRACES_EXPORTER={exporter!r}: the gateway exports with otlp (or none)")
    protocol = envstr("OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", envstr("OTEL_EXPORTER_OTLP_PROTOCOL", "http/protobuf"))
    if protocol.strip().lower() != "http/protobuf":
        raise ImproperlyConfigured(f"OTLP protocol {protocol!r}: the gateway sends http/protobuf (port 4318), not gRPC")
    endpoint = envstr("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "").strip()
    base = envstr("OTEL_EXPORTER_OTLP_ENDPOINT", "").strip()
    return endpoint or (base.rstrip("/") + "/v1/traces" if base else "")


# OpenTelemetry traces (gateway_project/tracing.py): off unless an OTLP/HTTP endpoint is configured.
TRACING = {
    "ENDPOINT": _otlp_traces_endpoint(),
    "SERVICE_NAME": envstr("OTEL_SERVICE_NAME", "agent-gateway"),
    # Upstream answers are untrusted: a model name or finish reason one sends is cut to this many characters on a
    # span (the SDK's own default is no limit).
    "ATTRIBUTE_LENGTH": envint(
        "OTEL_SPAN_ATTRIBUTE_VALUE_LENGTH_LIMIT",
        envint("OTEL_ATTRIBUTE_VALUE_LENGTH_LIMIT", 1024, minimum=1),
        minimum=1,
    ),
}

"""Settings, all from the environment (django-environ) with safe embedded defaults.

The embedded appliance needs no configuration at all: SQLite and the generated
secret key live in XENWEB_DATA_DIR (default ./var), Redis on 127.0.0.1:6379.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import environ

from xenweb.datadir import BASE_DIR, data_dir, secret_key
from xenweb.proxy import parse_networks
from xenweb.redis_namespace import appliance_namespace

env = environ.Env()

DATA_DIR: Path = data_dir()

SECRET_KEY = env.str("SECRET_KEY", default="") or secret_key(DATA_DIR)
DEBUG = env.bool("DEBUG", default=False)
ALLOWED_HOSTS = env.list("ALLOWED_HOSTS", default=["127.0.0.1", "localhost", "[::1]"])
# Origins besides the appliance's own that may post forms and open websockets
# (xenweb.ws_origin), e.g. https://xenweb.example.org:8443 behind a port-forward.
CSRF_TRUSTED_ORIGINS = env.list("CSRF_TRUSTED_ORIGINS", default=[])
# The proxies whose X-Forwarded-For/-Proto are believed (xenweb.proxy): addresses or
# networks. None in the embedded setup; the appliance's units set loopback (nginx).
FORWARDED_ALLOW_IPS = env.list("FORWARDED_ALLOW_IPS", default=[])
parse_networks(FORWARDED_ALLOW_IPS)  # a wrong entry stops every process at once, saying why

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "rest_framework",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_htmx",
    "axes",
    "xenweb.appliance",
    "xenweb.accounts",
    "xenweb.audit",
    "xenweb.jobs",
    "xenweb.alerts",
    "hosts",
    "guests",
    "storage",
    "conversions",
    "inventory",
    "dashboard",
    "wizard",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "xenweb.security.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "xenweb.api_errors.RejectNulInQueryMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    "django_htmx.middleware.HtmxMiddleware",
    "xenweb.appliance.middleware.SetupRequiredMiddleware",
    "xenweb.accounts.middleware.LoginRequiredMiddleware",
    "xenweb.appliance.middleware.ApplianceTimezoneMiddleware",
    # Last: django-axes refuses logins after too many failures (see AXES_* below).
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "xenweb.urls"
ASGI_APPLICATION = "xenweb.asgi.application"

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
                "xenweb.appliance.context.appliance",
                "xenweb.health.services_status",
                "xenweb.security.csp_nonce",
                "xenweb.alerts.context.alerts",
            ],
        },
    },
]

DATABASES = {
    "default": env.db("DATABASE_URL", default=f"sqlite:///{DATA_DIR / 'xenweb.sqlite3'}"),
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # WAL lets the web, worker and watcher processes read while one writes;
    # IMMEDIATE transactions avoid "database is locked" on lock upgrades.
    DATABASES["default"]["OPTIONS"] = {
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
        "transaction_mode": "IMMEDIATE",
        "timeout": 30,
    }
    # A file, not memory, so a real Celery worker and the web server can share the test database.
    DATABASES["default"]["TEST"] = {"NAME": str(DATA_DIR / "test-xenweb.sqlite3")}
else:
    DATABASES["default"].setdefault("CONN_MAX_AGE", 60)
    DATABASES["default"]["CONN_HEALTH_CHECKS"] = True

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator"},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

# Login throttling (django-axes, attempts stored in the database): after AXES_FAILURE_LIMIT
# wrong passwords for one user name from one address, that pair is locked out for the
# cool-off time; a success resets the count.
AUTHENTICATION_BACKENDS = [
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AXES_FAILURE_LIMIT = env.int("XENWEB_LOGIN_FAILURE_LIMIT", default=5)
AXES_COOLOFF_TIME = timedelta(minutes=env.int("XENWEB_LOGIN_COOLOFF_MINUTES", default=15))
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "accounts/locked.html"
AXES_VERBOSE = False
AXES_CLIENT_IP_CALLABLE = "xenweb.security.client_ip"

LOGIN_URL = "accounts:login"
LOGIN_REDIRECT_URL = "dashboard"
LOGOUT_REDIRECT_URL = "accounts:login"

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True

STATIC_URL = "/static/"
STATIC_ROOT = DATA_DIR / "static"
STATIC_ROOT.mkdir(exist_ok=True)
STATICFILES_DIRS = [BASE_DIR / "static"]
# Serve straight from the source folders too, so the embedded setup works before collectstatic.
WHITENOISE_USE_FINDERS = True

# --- Redis: broker, channel layer and cache in separate databases -------------------------
REDIS_URL = env.str("REDIS_URL", default="redis://127.0.0.1:6379").rstrip("/")
REDIS_DB_BASE = env.int("XENWEB_REDIS_DB_BASE", default=0)
# Every key, group and queue of this appliance in Redis starts with this, so appliances that
# share a Redis never see each other's jobs or events (xenweb.redis_namespace).
REDIS_PREFIX = env.str("XENWEB_REDIS_PREFIX", default="") or appliance_namespace(SECRET_KEY)


def _redis_db(offset: int) -> str:
    return f"{REDIS_URL}/{REDIS_DB_BASE + offset}"


CHANNEL_LAYERS = {
    "default": {
        "BACKEND": "channels_redis.core.RedisChannelLayer",
        "CONFIG": {
            # redis-py 8 defaults to a 5 s socket timeout, shorter than channels_redis's
            # blocking receive: idle websockets would be closed (channels_redis#422).
            "hosts": [{"address": _redis_db(1), "socket_timeout": None}],
            "prefix": f"{REDIS_PREFIX}:asgi",
            "capacity": 500,
            "expiry": 30,
        },
    }
}

CACHES = {
    "default": {
        "BACKEND": "xenweb.cache.SoftRedisCache",
        "LOCATION": _redis_db(2),
        "KEY_PREFIX": REDIS_PREFIX,
        "OPTIONS": {"socket_connect_timeout": 0.5, "socket_timeout": 2},
    }
}

# A P2V login password waits this long (sealed, in the cache's Redis database) for the
# worker that runs its job; see conversions/p2v/handoff.py.
P2V_PASSWORD_REDIS_URL = _redis_db(2)
P2V_PASSWORD_TTL = env.int("XENWEB_P2V_PASSWORD_TTL", default=300)

# --- Celery: configured for long, non-idempotent jobs -----------------------------------
JOB_MAX_SECONDS = env.int("XENWEB_JOB_MAX_SECONDS", default=24 * 3600)
CELERY_BROKER_URL = env.str("CELERY_BROKER_URL", default=_redis_db(0))
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
# With Redis down, creating a job must not hang the request: a short try, then the job
# waits for the broker (xenweb.jobs.dispatch).
CELERY_BROKER_CONNECTION_TIMEOUT = 2.0
CELERY_TASK_PUBLISH_RETRY_POLICY = {"max_retries": 1, "interval_start": 0,
                                    "interval_step": 0.5, "interval_max": 0.5}
# Redelivery only after the longest job could have finished, so a slow job is never run twice.
# Every key kombu writes (queues, unacked messages, bindings, pub/sub) in this
# appliance's namespace.
CELERY_BROKER_TRANSPORT_OPTIONS = {"visibility_timeout": JOB_MAX_SECONDS * 2,
                                   "global_keyprefix": f"{REDIS_PREFIX}:"}
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_TASK_TIME_LIMIT = JOB_MAX_SECONDS
CELERY_TASK_SOFT_TIME_LIMIT = JOB_MAX_SECONDS - 300
CELERY_TASK_IGNORE_RESULT = True
# The queue the web server, beat and the watcher send to and the workers consume (they
# take no -Q: the default queue is theirs).
CELERY_TASK_DEFAULT_QUEUE = env.str("XENWEB_QUEUE", default=REDIS_PREFIX)
CELERY_WORKER_HIJACK_ROOT_LOGGER = False
CELERY_WORKER_SEND_TASK_EVENTS = False
INVENTORY_RECONCILE_INTERVAL = env.float("XENWEB_INVENTORY_RECONCILE_INTERVAL", default=300.0)
CELERY_BEAT_SCHEDULE = {
    "reap-stale-jobs": {"task": "xenweb.jobs.tasks.reap_stale_jobs", "schedule": 30.0},
    # inventory/tasks.py; the name is from when it lived in hosts (kept for queued messages).
    "sample-metrics": {"task": "hosts.tasks.sample_metrics",
                       "schedule": env.float("XENWEB_METRICS_INTERVAL", default=30.0)},
    "redispatch-pending-jobs": {"task": "xenweb.jobs.tasks.redispatch_pending_jobs",
                                "schedule": 15.0},
    # Every host re-read in full (the watcher does it every 30 s too); a run still queued
    # when the next one is due is dropped.
    "reconcile-inventory": {"task": "inventory.tasks.reconcile_inventory",
                            "schedule": INVENTORY_RECONCILE_INTERVAL,
                            "options": {"expires": INVENTORY_RECONCILE_INTERVAL}},
}

# A running job's worker touches the row this often; after JOB_STALE_SECONDS without a
# heartbeat the reaper marks the job interrupted.
JOB_HEARTBEAT_SECONDS = env.float("XENWEB_JOB_HEARTBEAT_SECONDS", default=5.0)
JOB_STALE_SECONDS = env.float("XENWEB_JOB_STALE_SECONDS", default=60.0)
JOB_PROGRESS_INTERVAL = env.float("XENWEB_JOB_PROGRESS_INTERVAL", default=0.25)

# Performance samples are kept this long (one row per guest and host per interval).
METRICS_RETENTION_HOURS = env.float("XENWEB_METRICS_RETENTION_HOURS", default=24.0)

# A live migration is aborted after this long per GiB of guest memory (at least the floor).
MIGRATION_SECONDS_PER_GIB = env.float("XENWEB_MIGRATION_SECONDS_PER_GIB", default=800.0)
MIGRATION_MIN_TIMEOUT = env.float("XENWEB_MIGRATION_MIN_TIMEOUT", default=120.0)
# Where the driver reports no counters (Xen), progress is estimated at this rate.
MIGRATION_ESTIMATED_BPS = env.int("XENWEB_MIGRATION_ESTIMATED_BPS", default=50 * 1024 * 1024)

# --- REST API -----------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        # Token first: anonymous API calls then get 401 with a "Token" challenge.
        # `Authorization: Token <key>`; keys are stored hashed (xenweb.accounts.tokens).
        "xenweb.accounts.tokens.HashedTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    "DEFAULT_PERMISSION_CLASSES": ["xenweb.accounts.permissions.RolePermission"],
    "DEFAULT_PAGINATION_CLASS": "rest_framework.pagination.PageNumberPagination",
    "PAGE_SIZE": 50,
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    # JSON with a nesting limit (deeply nested JSON answers 400, not a RecursionError).
    "DEFAULT_PARSER_CLASSES": [
        "xenweb.json_limits.BoundedJSONParser",
        "rest_framework.parsers.FormParser",
        "rest_framework.parsers.MultiPartParser",
    ],
    # A hypervisor object gone behind the app's back is a 404, other libvirt errors a 409.
    "EXCEPTION_HANDLER": "xenweb.api_errors.exception_handler",
    "DEFAULT_THROTTLE_CLASSES": ["rest_framework.throttling.UserRateThrottle"],
    "DEFAULT_THROTTLE_RATES": {"user": env.str("XENWEB_API_RATE", default="6000/minute")},
}
SPECTACULAR_SETTINGS = {
    "TITLE": "xenweb API",
    "DESCRIPTION": "Hosts, guests, storage and long-running jobs of a xenweb appliance.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    "SERVE_PERMISSIONS": ["rest_framework.permissions.IsAuthenticated"],
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    # Swagger UI from the installed sidecar package, never from a CDN.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    # Several serializers have a `format` field with different choices.
    "ENUM_NAME_OVERRIDES": {"ExportFormatEnum": ["xva", "ova", "raw", "qcow2", "vmdk"],
                            "VolumeFormatEnum": ["raw", "qcow2"]},
    # The API is documented as JSON (forms are still parsed, for the browser's htmx calls).
    "PARSER_WHITELIST": ["rest_framework.parsers.JSONParser"],
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "xenweb.api_schema.add_error_responses",
    ],
}

# --- Security -----------------------------------------------------------------------------
SECURE = env.bool("XENWEB_SECURE", default=False)  # served over TLS (nginx in front)
SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
if SECURE:
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_SSL_REDIRECT = True
    # No SECURE_PROXY_SSL_HEADER: the scheme comes from xenweb.proxy, which believes
    # X-Forwarded-Proto only from FORWARDED_ALLOW_IPS and removes it from every request.
    SECURE_HSTS_SECONDS = env.int("XENWEB_HSTS_SECONDS", default=31536000)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = True
    SECURE_HSTS_PRELOAD = env.bool("XENWEB_HSTS_PRELOAD", default=True)

SETUP_TOKEN_FILE = DATA_DIR / "setup-token"
# The libvirt URI of the hypervisor this appliance runs on (deploy/install.sh sets
# xen:///system): the set-up wizard offers it as the first host instead of the demo driver.
LOCAL_HYPERVISOR = env.str("XENWEB_LOCAL_HYPERVISOR", default="")
DEMO_HOST_NAME = "demo"

# Alerts by e-mail go through Django's mail settings; links in them start with this URL
# (e.g. https://xenweb.example.org), none when empty.
ALERT_BASE_URL = env.str("XENWEB_ALERT_BASE_URL", default="")
EMAIL_BACKEND = env.str("XENWEB_EMAIL_BACKEND",
                        default="django.core.mail.backends.smtp.EmailBackend")
EMAIL_HOST = env.str("XENWEB_EMAIL_HOST", default="localhost")
EMAIL_PORT = env.int("XENWEB_EMAIL_PORT", default=25)
EMAIL_HOST_USER = env.str("XENWEB_EMAIL_USER", default="")
EMAIL_HOST_PASSWORD = env.str("XENWEB_EMAIL_PASSWORD", default="")
EMAIL_USE_TLS = env.bool("XENWEB_EMAIL_TLS", default=False)
EMAIL_TIMEOUT = 10
DEFAULT_FROM_EMAIL = env.str("XENWEB_EMAIL_FROM", default="xenweb@localhost")

# A storage pool with less free space than this share of its capacity is flagged low_space.
POOL_LOW_SPACE_PERCENT = env.float("XENWEB_POOL_LOW_SPACE_PERCENT", default=10.0)

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env.str("LOG_LEVEL", default="INFO")},
    "loggers": {"django.channels.server": {"level": "WARNING"}},
}

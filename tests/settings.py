"""Settings for the test suite: its own data dir, Redis databases and queue, so tests never
touch a running appliance's state. The live stack's worker and web server use these too."""

import os
from pathlib import Path

_BASE = Path(__file__).resolve().parent.parent
os.environ.setdefault("XENWEB_DATA_DIR", str(_BASE / "var" / "test"))
os.environ.setdefault("XENWEB_REDIS_DB_BASE", "10")
os.environ.setdefault("XENWEB_QUEUE", "xenweb-test")
os.environ.setdefault("XENWEB_JOB_HEARTBEAT_SECONDS", "1")

from xenweb.settings import *  # noqa: E402, F403

PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]  # fast, tests only

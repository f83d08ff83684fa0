"""Each appliance's own names in a Redis it may share with others.

Two appliances on one machine (or a test run next to `make run`) easily reach the same
redis-server and the same database numbers. Without names of their own, one appliance's
worker took the other's jobs from the shared `xenweb` queue and websockets got the other's
events. So every name an appliance puts into Redis starts with its namespace:

- the Celery queue (``XENWEB_QUEUE``, default: the namespace) and every key kombu writes
  (the transport's ``global_keyprefix``: queues, unacked messages, bindings, pub/sub);
- the channel layer's groups and channels (``prefix``);
- the cache's keys (``KEY_PREFIX``: throttles, the setup-token counter, health);
- raw keys (the P2V password handoff).

The namespace is derived from the secret key, which every process of one appliance
shares (the web server, workers on other machines, beat, the watcher) and no two
appliances do: a generated key is per data dir. ``XENWEB_REDIS_PREFIX`` sets it instead.
"""

from __future__ import annotations

import hashlib
import hmac

NAMESPACE_BYTES = 5  # 10 hex digits: 2^40 names, collisions are no concern


def appliance_namespace(secret_key: str) -> str:
    """``xenweb-<10 hex digits>``: a keyed hash, so the name reveals nothing of the key."""
    digest = hmac.new(secret_key.encode(), b"xenweb redis namespace", hashlib.sha256)
    return f"xenweb-{digest.hexdigest()[:NAMESPACE_BYTES * 2]}"

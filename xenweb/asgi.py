"""ASGI entry point (daphne): HTTP through Django, websockets through Channels.

Websockets are origin-checked against ALLOWED_HOSTS and carry the session user; each
consumer checks authentication and permission in connect().
"""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xenweb.settings")
django_asgi_app = get_asgi_application()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from xenweb.appliance.first_boot import announce_setup_token_if_needed  # noqa: E402
from xenweb.routing import websocket_urlpatterns  # noqa: E402

announce_setup_token_if_needed()

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
)

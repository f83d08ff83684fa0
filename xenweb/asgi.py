"""ASGI entry point (served by uvicorn, see xenweb.webserver): HTTP through Django,
websockets through Channels. Views marked @streams_body (volume uploads) read their
request body while it arrives instead of after Django has stored it (xenweb.streamed_body).

Websockets are origin-checked against ALLOWED_HOSTS and carry the session user; each
consumer checks authentication and permission in connect().
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xenweb.settings")
django.setup(set_prefix=False)

from xenweb.streamed_body import StreamingBodyASGIHandler  # noqa: E402

django_asgi_app = StreamingBodyASGIHandler()

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

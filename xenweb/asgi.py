"""ASGI entry point (served by uvicorn, see xenweb.webserver): HTTP through Django,
websockets through Channels. Views marked @streams_body (volume uploads) read their
request body while it arrives instead of after Django has stored it (xenweb.streamed_body).

In front of both, xenweb.proxy decides the client's address and scheme (X-Forwarded-* only
from FORWARDED_ALLOW_IPS). Websockets open only from the appliance's own origin
(xenweb.ws_origin: scheme, host and port) and carry the session user; each consumer checks
authentication and permission in connect().
"""

import os

import django

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "xenweb.settings")
django.setup(set_prefix=False)

from xenweb.streamed_body import StreamingBodyASGIHandler  # noqa: E402

django_asgi_app = StreamingBodyASGIHandler()

from channels.auth import AuthMiddlewareStack  # noqa: E402
from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from xenweb.appliance.first_boot import announce_setup_token_if_needed  # noqa: E402
from xenweb.proxy import TrustedProxyMiddleware  # noqa: E402
from xenweb.routing import websocket_urlpatterns  # noqa: E402
from xenweb.ws_origin import SameOriginValidator  # noqa: E402

announce_setup_token_if_needed()

application = TrustedProxyMiddleware(ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": SameOriginValidator(
            AuthMiddlewareStack(URLRouter(websocket_urlpatterns))
        ),
    }
))

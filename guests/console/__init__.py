"""A guest's consoles in the browser: the text console (serial or Xen PV) and the graphical
one (VNC), each a websocket bridged to the guest's host, and their pages.

sessions.py is what both websockets share (who is admitted, the audit record and status
message of an opened session, how a session ends), diagnosis.py why a session ended;
text_consumer.py bridges a libvirt console stream. vnc_consumer.py proxies RFB bytes to the
guest's VNC server along the route route.py finds (direct, UNIX socket or SSH), through
tunnel.py's byte pipe; rfb.py filters a viewer's input. text_views.py and vnc_views.py
serve the pages.
"""

"""The view-only filter of the VNC proxy: a viewer's client→server RFB bytes, parsed
message by message; only the handshake and the messages that shape the picture go on to the
guest's VNC server (guests.console.vnc_consumer).
"""

from __future__ import annotations

import struct


class RfbFilterError(Exception):
    """The client sent something a view-only session cannot forward safely."""


# Client→server message types (RFC 6143 and the extensions noVNC speaks).
SET_PIXEL_FORMAT, SET_ENCODINGS, FRAMEBUFFER_UPDATE_REQUEST = 0, 2, 3
KEY_EVENT, POINTER_EVENT, CLIENT_CUT_TEXT = 4, 5, 6
ENABLE_CONTINUOUS_UPDATES, CLIENT_FENCE = 150, 248
XVP, SET_DESKTOP_SIZE, QEMU_CLIENT_MESSAGE = 250, 251, 255
EXTENDED_MOUSE_BUTTONS = -316  # pseudo-encoding: PointerEvent with marker bit is 7 bytes
SECURITY_NONE, SECURITY_VNC_AUTH = 1, 2
VERSION_LENGTH = 12
CLIENT_VERSIONS = {b"RFB 003.007\n": 7, b"RFB 003.008\n": 8}


def _server_minor(greeting: bytes) -> int:
    """The minor version of a server's ProtocolVersion (``RFB 003.008\\n``), or -1."""
    if len(greeting) != VERSION_LENGTH or not greeting.startswith(b"RFB 003.") \
            or greeting[-1:] != b"\n" or not greeting[8:11].isdigit():
        return -1
    return int(greeting[8:11])


class ViewerInputFilter:
    """What a view-only client may send to the VNC server, parsed message by message.

    ``client(data)`` takes the bytes of one websocket frame and returns the bytes to forward
    (whole messages only; a message split over frames waits for its end); ``server(data)``
    is shown the server's bytes, of which it reads only the greeting. Raises
    ``RfbFilterError`` for anything it cannot frame: the session must then end.

    Forwarded: the handshake (ProtocolVersion 3.7 or 3.8, security type None or VNC
    password and its 16-byte response, ClientInit — forced to *shared*, so a viewer never
    disconnects other sessions), SetPixelFormat, SetEncodings, FramebufferUpdateRequest,
    EnableContinuousUpdates and ClientFence. Dropped: KeyEvent, PointerEvent,
    ClientCutText (any length, skipped without buffering), SetDesktopSize, XVP (power
    operations) and QEMU's extended key and audio messages. Anything else is refused.

    Only whole, well-formed forwarded messages reach the server, so even a client that lies
    about lengths cannot make the server read input out of the forwarded bytes: at worst
    the filter drops the wrong bytes or refuses.
    """

    def __init__(self) -> None:
        self._buffer = bytearray()
        self._greeting = bytearray()
        self._phase = "version"
        self._skip = 0  # payload bytes of a dropped message still to come
        self._extended_pointer = False
        self.dropped = 0  # input messages dropped so far

    def server(self, data: bytes) -> None:
        missing = VERSION_LENGTH - len(self._greeting)
        if missing > 0:
            self._greeting += data[:missing]

    def client(self, data: bytes) -> bytes:
        self._buffer += data
        out = bytearray()
        while True:
            if self._skip:
                skipped = min(self._skip, len(self._buffer))
                del self._buffer[:skipped]
                self._skip -= skipped
                if self._skip:
                    break
            if not self._buffer:
                break
            step = self._step()
            if step is None:  # an incomplete message: wait for more
                break
            length, forward = step
            if forward is not None:
                out += forward
            else:
                self.dropped += 1
            consumed = min(length, len(self._buffer))
            del self._buffer[:consumed]
            self._skip = length - consumed
        return bytes(out)

    # Each step returns (message length, bytes to forward or None to drop), or None when
    # the message is not complete yet.

    def _step(self) -> tuple[int, bytes | None] | None:
        return getattr(self, f"_{self._phase}")()

    def _whole(self, length: int) -> tuple[int, bytes | None] | None:
        if len(self._buffer) < length:
            return None
        return length, bytes(self._buffer[:length])

    def _version(self) -> tuple[int, bytes | None] | None:
        step = self._whole(VERSION_LENGTH)
        if step is None:
            return None
        server_minor = _server_minor(bytes(self._greeting))
        if server_minor < 7:
            raise RfbFilterError("A view-only session needs a VNC server speaking RFB 3.7 or "
                                 "later.")
        client_minor = CLIENT_VERSIONS.get(step[1] or b"")
        if client_minor is None or client_minor > server_minor:
            raise RfbFilterError("A view-only session needs the client to speak RFB 3.7 or "
                                 "3.8.")
        self._phase = "security"
        return step

    def _security(self) -> tuple[int, bytes | None] | None:
        kind = self._buffer[0]
        if kind not in (SECURITY_NONE, SECURITY_VNC_AUTH):
            raise RfbFilterError(f"A view-only session supports no VNC security type {kind} "
                                 "(only none and VNC password).")
        self._phase = "auth" if kind == SECURITY_VNC_AUTH else "init"
        return 1, bytes([kind])

    def _auth(self) -> tuple[int, bytes | None] | None:
        step = self._whole(16)  # the DES response to the server's challenge
        if step is not None:
            self._phase = "init"
        return step

    def _init(self) -> tuple[int, bytes | None] | None:
        self._phase = "messages"
        return 1, b"\x01"  # ClientInit, shared-flag forced on

    def _messages(self) -> tuple[int, bytes | None] | None:
        buf = self._buffer
        kind = buf[0]
        if kind == SET_PIXEL_FORMAT:
            return self._whole(20)
        if kind in (FRAMEBUFFER_UPDATE_REQUEST, ENABLE_CONTINUOUS_UPDATES):
            return self._whole(10)
        if kind == SET_ENCODINGS:
            if len(buf) < 4:
                return None
            count = struct.unpack_from(">H", buf, 2)[0]
            step = self._whole(4 + 4 * count)
            if step is not None:
                encodings = struct.unpack_from(f">{count}i", buf, 4)
                self._extended_pointer = EXTENDED_MOUSE_BUTTONS in encodings
            return step
        if kind == CLIENT_FENCE:
            if len(buf) < 9:
                return None
            return self._whole(9 + buf[8])
        if kind == KEY_EVENT:
            return self._drop(8)
        if kind == POINTER_EVENT:
            if len(buf) < 2:
                return None
            return self._drop(7 if self._extended_pointer and buf[1] & 0x80 else 6)
        if kind == CLIENT_CUT_TEXT:
            if len(buf) < 8:
                return None
            length = struct.unpack_from(">i", buf, 4)[0]  # negative: extended clipboard
            return 8 + abs(length), None
        if kind == XVP:
            return self._drop(4)
        if kind == SET_DESKTOP_SIZE:
            if len(buf) < 8:
                return None
            return self._drop(8 + 16 * buf[6])
        if kind == QEMU_CLIENT_MESSAGE:
            return self._qemu_message()
        raise RfbFilterError(f"A view-only session cannot forward VNC client message type "
                             f"{kind}.")

    def _drop(self, length: int) -> tuple[int, bytes | None] | None:
        return (length, None) if len(self._buffer) >= length else None

    def _qemu_message(self) -> tuple[int, bytes | None] | None:
        buf = self._buffer
        if len(buf) < 2:
            return None
        if buf[1] == 0:  # extended key event
            return self._drop(12)
        if buf[1] == 1:  # audio: enable (0), disable (1), set format (2)
            if len(buf) < 4:
                return None
            operation = struct.unpack_from(">H", buf, 2)[0]
            if operation in (0, 1):
                return self._drop(4)
            if operation == 2:
                return self._drop(10)
        raise RfbFilterError("A view-only session cannot forward this QEMU VNC message.")

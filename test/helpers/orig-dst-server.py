#!/usr/bin/env python3
# An IPv6-only (V6ONLY on: it shares ports with IPv4 backends) backend for the IPv6 e2e cases, run inside a namespace:
#   python3 orig-dst-server.py --tcp PORT:TEXT ... --udp PORT:TEXT ...
# TCP: writes "TEXT ORIGDST\n" and closes, ORIGDST being the connection's original destination
# before REDIRECT ([addr]:port from IP6T_SO_ORIGINAL_DST, addr:port from SO_ORIGINAL_DST for an
# IPv4 client, "-" when not redirected). Node cannot read either socket option, hence Python.
# UDP: answers each datagram with "TEXT:datagram". Prints "ready" once every socket is bound.
import socket
import struct
import sys
import threading

SOL_IPV6 = 41
SO_ORIGINAL_DST = 80  # IP6T_SO_ORIGINAL_DST has the same number at SOL_IPV6


def original_dst(conn, mapped):
    try:
        if mapped:
            raw = conn.getsockopt(socket.SOL_IP, SO_ORIGINAL_DST, 16)
            port, addr = struct.unpack_from('!2xH4s', raw)
            return f'{socket.inet_ntop(socket.AF_INET, addr)}:{port}'
        raw = conn.getsockopt(SOL_IPV6, SO_ORIGINAL_DST, 28)
        port = struct.unpack_from('!H', raw, 2)[0]
        return f'[{socket.inet_ntop(socket.AF_INET6, raw[8:24])}]:{port}'
    except OSError:
        return '-'


def serve_tcp(port, text):
    s = socket.socket(socket.AF_INET6, socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(('::', port))
    s.listen(128)

    def loop():
        while True:
            conn, peer = s.accept()
            mapped = peer[0].startswith('::ffff:')
            try:
                conn.sendall(f'{text} {original_dst(conn, mapped)}\n'.encode())
            finally:
                conn.close()

    threading.Thread(target=loop, daemon=True).start()


def serve_udp(port, text):
    s = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
    s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
    s.bind(('::', port))

    def loop():
        while True:
            data, peer = s.recvfrom(65535)
            s.sendto(f'{text}:'.encode() + data, peer)

    threading.Thread(target=loop, daemon=True).start()


args = sys.argv[1:]
for flag, value in zip(args[0::2], args[1::2]):
    port, _, text = value.partition(':')
    if flag == '--tcp':
        serve_tcp(int(port), text)
    elif flag == '--udp':
        serve_udp(int(port), text)
    else:
        sys.stderr.write(f'orig-dst-server: unknown flag {flag}\n')
        sys.exit(2)
print('ready', flush=True)
threading.Event().wait()

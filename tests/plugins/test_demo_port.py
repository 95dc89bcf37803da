"""The demo's model server port: 8501 unless something listens there."""

from __future__ import annotations

import socket

from skewfree.demo import free_port


def test_the_preferred_port_is_taken_unless_something_listens_on_it():
    """Back-to-back demos put the server on a random port: the last one's 8501 was in TIME_WAIT, which the
    check refused although the server (SO_REUSEADDR) binds it."""
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind(("127.0.0.1", 0))
    server.listen()
    port = server.getsockname()[1]
    assert free_port(port) != port  # listening: another port
    client = socket.create_connection(("127.0.0.1", port), timeout=10)
    server.settimeout(10)
    while True:  # free_port's own probe connected too: find the client's connection
        accepted, peer = server.accept()
        accepted.close()  # the server side closes first: its end of the connection stays in TIME_WAIT
        if peer == client.getsockname():
            break
    client.recv(1)
    client.close()
    server.close()
    assert free_port(port) == port

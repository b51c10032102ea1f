#!/usr/bin/env python3
"""The kernel's floor under a fan-out on this machine: what one `send` of a
small frame to one of many loopback TCP sockets costs the sending core,
with nothing of natter around it.

The sender is pinned to core 0 (where natter-bench puts the server), the
receiver to core 1 (where natter-bench's clients run). On loopback the
sender's `send` also runs the receiver's TCP stack and wakes its reader, as
it does for natter. Two receivers: one reading with epoll, like natter-bench,
and one that never reads (no wake-ups).

    python3 bench/floor/loopback-send.py [SOCKETS] [ROUNDS] [BYTES]

Prints the sender's system and user CPU per send (from getrusage).
"""

import multiprocessing
import os
import resource
import select
import socket
import sys
import time


def receive(port, sockets, reads, ready, done):
    os.sched_setaffinity(0, {1})
    listener = socket.create_server(("127.0.0.1", port), backlog=4096)
    ready.set()
    conns = {}
    poller = select.epoll()
    while len(conns) < sockets:
        conn, _ = listener.accept()
        conn.setblocking(False)
        conns[conn.fileno()] = conn
        poller.register(conn.fileno(), select.EPOLLIN)
    while not done.is_set():
        if not reads:
            time.sleep(0.05)
            continue
        for fd, _ in poller.poll(0.05):
            try:
                conns[fd].recv(65536)
            except BlockingIOError:
                pass


def measure(sockets, rounds, size, reads):
    port = 20000 + os.getpid() % 10000
    ready, done = multiprocessing.Event(), multiprocessing.Event()
    receiver = multiprocessing.Process(
        target=receive, args=(port, sockets, reads, ready, done)
    )
    receiver.start()
    ready.wait()
    os.sched_setaffinity(0, {0})
    conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(sockets)]
    for conn in conns:
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    time.sleep(1)
    frame = b"x" * size
    before = resource.getrusage(resource.RUSAGE_SELF)
    for _ in range(rounds):
        for conn in conns:
            conn.send(frame)
    after = resource.getrusage(resource.RUSAGE_SELF)
    done.set()
    receiver.join()
    for conn in conns:
        conn.close()
    sends = sockets * rounds
    system = 1e6 * (after.ru_stime - before.ru_stime) / sends
    user = 1e6 * (after.ru_utime - before.ru_utime) / sends
    who = "reading with epoll" if reads else "never reading"
    print(
        f"{sockets} sockets, {rounds} rounds of {size} B, receiver {who}: "
        f"{system:.2f} µs system + {user:.2f} µs user CPU per send"
    )


if __name__ == "__main__":
    args = [int(a) for a in sys.argv[1:]]
    sockets, rounds, size = (args + [5000, 10, 250][len(args):])[:3]
    for reads in (True, False):
        measure(sockets, rounds, size, reads)

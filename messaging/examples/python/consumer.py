#!/usr/bin/env python3
"""A consumer of the toolkit's messages written in Python, with nothing but the standard
library: it subscribes to a NATS subject (the JetStream stream's subjects are plain NATS
subjects too), reads each message body as a CloudEvent in JSON form, checks its
attributes, and prints one JSON line per event:

    {"id": ..., "type": ..., "subject": ..., "category": ..., "position": ...,
     "streamversion": ..., "source": ..., "time": ..., "data": {...}}

Usage: consumer.py NATS_URL SUBJECT COUNT
(e.g. consumer.py nats://127.0.0.1:4222 'events.>' 10). It prints "ready" on stderr once
subscribed, and exits after COUNT events (status 0), or at the first message that is not
a valid CloudEvent (status 1, with the reason).
"""

import json
import socket
import sys
import uuid
from datetime import datetime
from urllib.parse import urlparse

REQUIRED = ("specversion", "id", "source", "type")
EXTENSIONS = ("category", "position", "streamversion", "schemaversion")


def check(event):
    """Returns why `event` is not a CloudEvent of the wire format, or None."""
    missing = [name for name in REQUIRED + EXTENSIONS if name not in event]
    if missing:
        return f"missing attributes {missing}"
    if event["specversion"] != "1.0":
        return f"specversion {event['specversion']!r}"
    uuid.UUID(event["id"])
    datetime.fromisoformat(event["time"].replace("Z", "+00:00"))
    commit, sequence = event["position"].split("/")
    int(commit), int(sequence)
    if not isinstance(event["streamversion"], int) or event["streamversion"] < 1:
        return f"streamversion {event['streamversion']!r}"
    return None


class Nats:
    """Just enough of the NATS client protocol to subscribe."""

    def __init__(self, url):
        parsed = urlparse(url)
        self.sock = socket.create_connection((parsed.hostname, parsed.port or 4222))
        self.buffer = b""
        info = self.line()
        if not info.startswith(b"INFO"):
            raise RuntimeError(f"not a NATS server: {info!r}")
        self.send(b'CONNECT {"verbose":false,"pedantic":false,"headers":true,"protocol":1}')

    def send(self, line):
        self.sock.sendall(line + b"\r\n")

    def fill(self):
        chunk = self.sock.recv(65536)
        if not chunk:
            raise RuntimeError("the server closed the connection")
        self.buffer += chunk

    def line(self):
        while b"\r\n" not in self.buffer:
            self.fill()
        line, self.buffer = self.buffer.split(b"\r\n", 1)
        return line

    def exactly(self, size):
        while len(self.buffer) < size + 2:
            self.fill()
        data, self.buffer = self.buffer[:size], self.buffer[size + 2:]
        return data

    def messages(self, subject):
        """Yields the payload of each message on `subject`."""
        self.send(f"SUB {subject} 1".encode())
        self.send(b"PING")
        while True:
            line = self.line()
            if line == b"PING":
                self.send(b"PONG")
            elif line == b"PONG":
                print("ready", file=sys.stderr, flush=True)
            elif line.startswith(b"MSG "):
                size = int(line.split()[-1])
                yield self.exactly(size)
            elif line.startswith(b"HMSG "):
                header_size, total = (int(n) for n in line.split()[-2:])
                yield self.exactly(total)[header_size:]
            elif line.startswith(b"-ERR"):
                raise RuntimeError(line.decode())


def main():
    url, subject, count = sys.argv[1], sys.argv[2], int(sys.argv[3])
    seen = 0
    for body in Nats(url).messages(subject):
        event = json.loads(body)
        problem = check(event)
        if problem:
            print(f"not a CloudEvent of the wire format: {problem}: {body[:200]!r}", file=sys.stderr)
            return 1
        print(json.dumps({name: event.get(name) for name in (
            "id", "type", "subject", "category", "position", "streamversion", "source", "time",
            "correlationid", "data")}), flush=True)
        seen += 1
        if seen == count:
            return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())

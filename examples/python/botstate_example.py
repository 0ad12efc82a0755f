#!/usr/bin/env python3
"""botstate from Python, with the standard library only.

Claims an event, completes it, and sees a redelivery find it done (exactly
once); acquires a thread's lock, queues a second message behind it and
hands the lock over to it (one handler per thread).

    BOTSTATE_URL=http://127.0.0.1:8080 BOTSTATE_TOKEN=... python3 examples/python/botstate_example.py

Every operation is a POST of JSON to /v1/ns/{namespace}/{operation}; the
document at /v1/openapi.json lists them. Times are RFC 3339, binary values
base64, and errors RFC 9457 problem documents with a stable "code".
"""
import base64
import datetime
import json
import os
import sys
import urllib.error
import urllib.request
import uuid

BASE = os.environ.get("BOTSTATE_URL", "http://127.0.0.1:8080").rstrip("/")
TOKEN = os.environ.get("BOTSTATE_TOKEN", "")
NAMESPACE = os.environ.get("BOTSTATE_NAMESPACE", "python-example")


class Problem(Exception):
    """An error the server answered: its stable code and its detail."""

    def __init__(self, status, code, detail):
        super().__init__(f"{status} {code}: {detail}")
        self.status, self.code = status, code


def call(operation, **request):
    headers = {"Content-Type": "application/json"}
    if TOKEN:
        headers["Authorization"] = "Bearer " + TOKEN
    req = urllib.request.Request(f"{BASE}/v1/ns/{NAMESPACE}/{operation}",
                                 data=json.dumps(request).encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return json.load(resp)
    except urllib.error.HTTPError as err:
        problem = json.load(err)
        raise Problem(problem["status"], problem["code"], problem.get("detail", "")) from None


def at(seconds):
    """The time seconds from now, as the API wants it."""
    return (datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(seconds=seconds)).isoformat()


def b64(text):
    return base64.b64encode(text.encode()).decode()


def unb64(value):
    return base64.b64decode(value).decode()


def exactly_once(run):
    key = f"slack:event:T1:Ev-{run}"
    token = uuid.uuid4().hex
    claim = call("events/claim", key=key, payload=b64("hello"), token=token,
                 lease_until=at(60), expires_at=at(86400))
    assert claim["outcome"] == "acquired", claim
    # ... the handler runs here ...
    call("events/complete", key=key, token=token, result=b64("answered"), expires_at=at(86400))

    # Slack delivers the event again: it is done, with its result.
    again = call("events/claim", key=key, token=uuid.uuid4().hex, lease_until=at(60))
    assert again["outcome"] == "completed" and unb64(again["event"]["result"]) == "answered", again

    # A worker whose claim is gone cannot complete it (fencing).
    try:
        call("events/complete", key=key, token=token, result=b64("twice"))
        raise AssertionError("a stale token completed an event")
    except Problem as p:
        assert p.status == 409 and p.code == "not_owner", p
    print("event: claimed, completed, redelivery found it done, stale token refused")


def one_per_thread(run):
    key = f"thread:C1:{run}"
    first = call("locks/acquire", key=key, owner="py-1", strategy="queue", entry=b64("first message"),
                 expires_at=at(30), entry_expires_at=at(3600))
    assert first["outcome"] == "acquired", first
    token = first["holder"]["token"]

    # A second message arrives while the first is handled: it waits.
    second = call("locks/acquire", key=key, owner="py-2", strategy="queue", entry=b64("second message"),
                  expires_at=at(30), entry_expires_at=at(3600))
    assert second["outcome"] == "queued", second

    # Done with the first: the lock passes to the second, atomically.
    hand = call("locks/handover", key=key, token=token, expires_at=at(30))
    assert hand["held"] and unb64(hand["next"]["payload"]) == "second message", hand

    # Done with the second, nothing waits: the lock is released.
    hand = call("locks/handover", key=key, token=token, expires_at=at(30))
    assert not hand["held"], hand
    print("lock: acquired, second message queued, handed over, released")


def main():
    run = uuid.uuid4().hex[:8]
    exactly_once(run)
    one_per_thread(run)
    print("ok")


if __name__ == "__main__":
    try:
        main()
    except (Problem, AssertionError, OSError) as err:
        print("failed:", err, file=sys.stderr)
        sys.exit(1)

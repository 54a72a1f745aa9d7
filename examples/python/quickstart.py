"""Switchboard from Python: the generated stubs (the `switchboard` package's gen modules).

    SWITCHBOARD_GRPC_ADDR=localhost:8080 SWITCHBOARD_TOKEN=$TOKEN .venv/bin/python \\
        examples/python/quickstart.py

The same steps as examples/node/quickstart.mjs, each a function the README quotes: send an SMS and
follow it to DELIVERED on the SMS stream; place a call and follow it to its end on the calling
stream; read the rich error details of a bad request; create an event handler and verify its
signed webhook with `standardwebhooks` (PyPI). Any failure exits non-zero.
"""

from __future__ import annotations

import os
import queue
import random
import sys
import threading
from collections.abc import Callable, Iterable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

import grpc
from google.rpc import error_details_pb2
from grpc_status import rpc_status
from switchboard.calling.v1 import call_pb2
from switchboard.calling.v1 import calling_service_pb2 as calling_pb
from switchboard.calling.v1 import calling_service_pb2_grpc as calling_rpc
from switchboard.messaging.v1 import event_handler_pb2
from switchboard.messaging.v1 import messaging_service_pb2 as messaging_pb
from switchboard.messaging.v1 import messaging_service_pb2_grpc as messaging_rpc
from switchboard.messaging.v1 import sender_pb2 as sender_pb
from switchboard.sms.v1 import sms_message_pb2 as sms_pb
from switchboard.sms.v1 import sms_service_pb2_grpc as sms_rpc

ADDR = os.environ.get("SWITCHBOARD_GRPC_ADDR", "localhost:8080")  # Envoy passes gRPC through
TOKEN = os.environ.get("SWITCHBOARD_TOKEN", "")
TIMEOUT = float(os.environ.get("SWITCHBOARD_STEP_TIMEOUT_SECONDS", "30"))
AUTH = [("authorization", f"Bearer {TOKEN}")]

channel = grpc.insecure_channel(ADDR)
sms = sms_rpc.SmsServiceStub(channel)
calling = calling_rpc.CallingServiceStub(channel)
messaging = messaging_rpc.MessagingServiceStub(channel)

Event = TypeVar("Event", sms_pb.SmsEvent, calling_pb.CallEvent)


def follow(stream: Iterable[Event], done: Callable[[Event], bool]) -> list[Event]:
    """Reads a stream (opened with timeout=TIMEOUT) until `done(event)`; heartbeats skipped."""
    seen: list[Event] = []
    for event in stream:
        if event.envelope.type == "heartbeat":
            continue
        seen.append(event)
        if done(event):
            stream.cancel()  # type: ignore[attr-defined]
            return seen
    raise RuntimeError("the stream ended before the outcome")


def us_number(ending: str = "") -> str:
    """A valid +1 415 number with a random middle; the sandbox carrier scripts outcomes by the
    last four digits (random when not given)."""
    return f"+1415{random.randint(200, 999)}{ending or f'{random.randint(0, 9999):04d}'}"


# a. Send an SMS and follow its events until it is delivered.
def send_sms_and_follow() -> str:
    reply = sms.SendSms(
        sms_pb.SendSmsRequest(
            messages=[sms_pb.SmsMessage(channel="clickatell", to="+27821234567", content="Hello")]
        ),
        metadata=AUTH,
        timeout=TIMEOUT,
    )
    [message] = reply.clickatell_msg_response.messages
    if not message.accepted:
        raise RuntimeError(f"not accepted: {message.error}")
    api_id: str = message.api_message_id
    print(f"sms: sent {api_id}")
    # after="0" replays this message's events from the start, so none is missed.
    request = sms_pb.StreamSmsEventsRequest(api_message_ids=[api_id], after="0")
    events = follow(
        sms.StreamSmsEvents(request, metadata=AUTH, timeout=TIMEOUT),
        lambda e: e.message.status in ("DELIVERED", "FAILED"),
    )
    for event in events:
        print(f"sms: {event.envelope.cursor} {event.envelope.type} {event.message.status}")
    if events[-1].message.status != "DELIVERED":
        raise RuntimeError(f"sms ended {events[-1].message.status}: {events[-1].message.error}")
    print(f"sms: {api_id} DELIVERED")
    return api_id


# b. Place a call on the sandbox carrier and follow it on the calling stream to its end.
def place_call_and_follow() -> str:
    # A voice-capable sender: a long code of a class whose delivery window is always open.
    sender = messaging.CreateSenderId(
        messaging_pb.CreateSenderIdRequest(
            body=sender_pb.SenderIdInput(
                type_id="sms-long-code", class_id="alerts-na", address=us_number()
            )
        ),
        metadata=AUTH,
        timeout=TIMEOUT,
    )
    # Numbers ending 0500: the far end answers, then hangs up 2 s later.
    body = call_pb2.CallInput(to=us_number("0500"), external_id="python-quickstart")
    setattr(body, "from", sender.id)  # `from` is a Python keyword
    created = calling.CreateCall(
        calling_pb.CreateCallRequest(body=body), metadata=AUTH, timeout=TIMEOUT
    )
    print(f"call: placed {created.id}")
    request = calling_pb.StreamCallEventsRequest(call_ids=[created.id], after="0")
    events = follow(
        calling.StreamCallEvents(request, metadata=AUTH, timeout=TIMEOUT),
        lambda e: e.WhichOneof("resource") == "call" and e.call.state in ("COMPLETED", "REJECTED"),
    )
    calls = [e.call for e in events if e.WhichOneof("resource") == "call"]
    print("call: " + " -> ".join(c.state for c in calls))
    if calls[-1].state != "COMPLETED":
        raise RuntimeError(f"call ended {calls[-1].state}")
    call_id: str = created.id
    print(f"call: {call_id} COMPLETED after {calls[-1].chargeable_duration} s")
    return call_id


# c. Rich error details: google.rpc.Status from the grpc-status-details-bin trailer.
def read_error_details() -> None:
    try:
        sms.SendSms(
            sms_pb.SendSmsRequest(messages=[sms_pb.SmsMessage(channel="clickatell")]),
            metadata=AUTH,
            timeout=TIMEOUT,
        )
    except grpc.RpcError as error:
        print(f"error: {error.code().name}: {error.details()}")
        status = rpc_status.from_call(error)
        if status is None:
            raise RuntimeError("no grpc-status-details-bin on the error") from error
        violations = 0
        for detail in status.details:
            if detail.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
                info = error_details_pb2.ErrorInfo()
                detail.Unpack(info)
                print(
                    f"error: ErrorInfo reason={info.reason} domain={info.domain} "
                    f"metadata={dict(info.metadata)}"
                )
            elif detail.Is(error_details_pb2.BadRequest.DESCRIPTOR):
                bad = error_details_pb2.BadRequest()
                detail.Unpack(bad)
                for v in bad.field_violations:
                    print(f"error: field {v.field}: {v.description} ({v.reason})")
                    violations += 1
        if not violations:
            raise RuntimeError("expected BadRequest field violations") from error
        return
    raise RuntimeError("the bad request succeeded")


# d. Webhooks: an event handler POSTs signed events to a URL; verify them with standardwebhooks.
def receive_verified_webhook() -> dict[str, Any] | None:
    from standardwebhooks.webhooks import Webhook, WebhookVerificationError  # pip install

    secret: list[str] = []  # known once CreateEventHandler returns
    verified: queue.Queue[tuple[dict[str, Any], str]] = queue.Queue()

    class Receiver(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("content-length", 0)))
            try:
                # Checks webhook-signature (any of its v1 signatures) and that webhook-timestamp
                # is recent; the raw body is verified, never re-encoded JSON.
                event = Webhook(secret[0]).verify(body, dict(self.headers))
            except (WebhookVerificationError, IndexError) as error:
                print(f"webhook: rejected {self.headers.get('webhook-id')}: {error}")
                self.send_response(400)
                self.end_headers()
                return
            self.send_response(204)  # any 2xx is success; answer fast, work later
            self.end_headers()
            verified.put((event, body.decode()))

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Receiver)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/switchboard-events"
    try:
        handler = messaging.CreateEventHandler(
            messaging_pb.CreateEventHandlerRequest(
                body=event_handler_pb2.EventHandlerInput(
                    url=url, event_types=["sms.delivered"], description="Python quick start"
                )
            ),
            metadata=AUTH,
            timeout=TIMEOUT,
        )
        secret.append(handler.secret)  # shown only here (and on rotate): store it
        print(f"webhook: event handler {handler.id} -> {url}")
        reply = sms.SendSms(
            sms_pb.SendSmsRequest(
                messages=[sms_pb.SmsMessage(channel="clickatell", to="+27821234568", content="Hi")]
            ),
            metadata=AUTH,
            timeout=TIMEOUT,
        )
        api_id = reply.clickatell_msg_response.messages[0].api_message_id
        for event, body in _arrivals(verified):
            print(f"webhook: verified {event.get('type')}")
            if event.get("resource_id") == api_id or api_id in body:
                print(f"webhook: {event['type']} for {api_id} verified with standardwebhooks")
                messaging.DeleteEventHandler(
                    messaging_pb.DeleteEventHandlerRequest(event_handler_id=handler.id),
                    metadata=AUTH,
                    timeout=TIMEOUT,
                )
                return event
        raise RuntimeError("no verified webhook in time")
    finally:
        server.shutdown()


def _arrivals(
    verified: queue.Queue[tuple[dict[str, Any], str]],
) -> Iterator[tuple[dict[str, Any], str]]:
    while True:
        try:
            yield verified.get(timeout=TIMEOUT)
        except queue.Empty:
            return


def main() -> int:
    if not TOKEN:
        print("set SWITCHBOARD_TOKEN (e.g. switchboard token create --org demo)", file=sys.stderr)
        return 2
    try:
        send_sms_and_follow()
        place_call_and_follow()
        read_error_details()
        receive_verified_webhook()
    except (grpc.RpcError, RuntimeError) as error:
        print(f"quickstart: FAILED: {error!r}", file=sys.stderr)
        return 1
    print("quickstart: OK")
    return 0


if __name__ == "__main__":
    sys.exit(main())

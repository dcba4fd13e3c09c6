#!/usr/bin/env python3
"""Accord from Python: a police force sends an Operation Encompass notification to a school, and
the school's Designated Safeguarding Lead (DSL) finds it in the school's inbox.

Steps (each is a plain gRPC call on the public contract in proto/accord/v1/):

1. Load the force's Ed25519 signing key (PKCS#8 PEM, as `accord keygen` writes).
2. Build an `accord.v1.EncompassNotificationSent` payload, wrap it in an `EventBody` envelope,
   encode the body once and sign PAE(type, body) with the key (DSSE, see `sign_body`).
3. `accord.v1.Ledger/Append` it with `authorization: Bearer <police JWT>`, and check the receipt's
   Merkle leaf hash against the bytes we signed.
4. With the DSL's token, `accord.v1.Views/Query` the school inbox (READ_MODEL_SCHOOL_INBOX,
   newest first), stating why in `accord-purpose` metadata, and print the notification.

Generate the stubs first (examples/python/generate.sh); see README.md beside this file.
Exit status: 0 on success, 1 on any gRPC error or failed check (the status code and the server's
message are printed), 2 on bad command-line arguments.
"""

from __future__ import annotations

import argparse
import base64
import datetime
import hashlib
import os
import struct
import sys
import time
import uuid
from pathlib import Path
from typing import NoReturn

HERE = Path(__file__).resolve().parent

# The DSSE payload type of an Accord event body (event.proto, `SignedEvent`).
EVENT_PAYLOAD_TYPE = b"application/vnd.accord.event+protobuf"


def parse_args() -> argparse.Namespace:
    env = os.environ.get
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--endpoint", default=env("ACCORD_ENDPOINT", "127.0.0.1:50051"),
                   help="server address: host:port or http://host:port (plaintext), "
                        "https://host:port (TLS) [env ACCORD_ENDPOINT; default %(default)s]")
    p.add_argument("--stubs", default=env("ACCORD_STUBS", str(HERE / "generated")),
                   help="folder generate.sh wrote the Python stubs to [env ACCORD_STUBS; default %(default)s]")
    # The sending force: its signing key and the author of the event.
    p.add_argument("--key", required=True, metavar="FILE",
                   help="the agency's Ed25519 signing key, PKCS#8 PEM (e.g. deploy/dev/met-police-demo.key)")
    p.add_argument("--key-id", default="met-police-demo",
                   help="the key's id as registered in the agencies file [default %(default)s]")
    p.add_argument("--agency", default="met-police", help="the sending agency [default %(default)s]")
    p.add_argument("--user", default="do-1",
                   help="the officer: must be the police token's user [default %(default)s]")
    p.add_argument("--role", default="disclosure_officer",
                   help="the officer's role: must be one of the police token's roles [default %(default)s]")
    p.add_argument("--police-token", default=env("ACCORD_POLICE_TOKEN"),
                   help="the officer's bearer JWT [env ACCORD_POLICE_TOKEN]")
    # The receiving school and its DSL.
    p.add_argument("--school", default="st-marys-school",
                   help="the receiving school's agency id [default %(default)s]")
    p.add_argument("--urn", default="100234", help="the school's URN, 6 or 7 digits [default %(default)s]")
    p.add_argument("--dsl-token", default=env("ACCORD_DSL_TOKEN"),
                   help="the school DSL's bearer JWT (role dsl) [env ACCORD_DSL_TOKEN]")
    p.add_argument("--purpose", default="morning check of Operation Encompass notifications",
                   help="why the DSL reads the inbox, sent as accord-purpose [default %(default)r]")
    p.add_argument("--wait", type=float, default=30.0,
                   help="seconds to wait for the read model to reach the append [default %(default)s]")
    args = p.parse_args()
    if not args.police_token:
        p.error("--police-token (or ACCORD_POLICE_TOKEN) is required")
    if not args.dsl_token:
        p.error("--dsl-token (or ACCORD_DSL_TOKEN) is required")
    return args


def fail(message: str) -> NoReturn:
    print(f"error: {message}", file=sys.stderr)
    sys.exit(1)


args = parse_args()
sys.path.insert(0, args.stubs)
try:
    import grpc
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
    from google.protobuf.timestamp_pb2 import Timestamp

    from accord.v1 import catalogue_pb2, event_pb2, ledger_pb2, ledger_pb2_grpc, views_pb2, views_pb2_grpc
except ImportError as e:
    fail(f"{e}: install requirements.txt and run examples/python/generate.sh (stubs looked for in {args.stubs})")


# ----------------------------------------------------------------------------------------------
# Signing
# ----------------------------------------------------------------------------------------------

def load_key(path: str) -> Ed25519PrivateKey:
    """An agency's secret key from a PKCS#8 PEM file (`-----BEGIN PRIVATE KEY-----`)."""
    try:
        pem = Path(path).read_bytes()
    except OSError as e:
        fail(f"reading the signing key: {e}")
    try:
        key = serialization.load_pem_private_key(pem, password=None)
    except ValueError:
        # Keys written by older Accord versions are PKCS#8 v2 (RFC 5958: the public key follows
        # the secret key), which `cryptography` (50.0.2) refuses to load. Read it by hand.
        key = load_ed25519_pkcs8(path, pem)
    if not isinstance(key, Ed25519PrivateKey):
        fail(f"{path} is not an Ed25519 key")
    return key


def load_ed25519_pkcs8(path: str, pem: bytes) -> Ed25519PrivateKey:
    """Reads an Ed25519 PKCS#8 key, v1 or v2 (RFC 5958, RFC 8410 section 7):
    SEQUENCE { INTEGER 0 or 1, SEQUENCE { OID 1.3.101.112 }, OCTET STRING { OCTET STRING seed },
               [0] attributes OPTIONAL, [1] publicKey OPTIONAL }"""

    def bad(why: str = "not an Ed25519 PKCS#8 private key") -> None:
        fail(f"{path}: {why}")

    def tlv(buf: bytes, i: int) -> tuple[int, bytes, int]:
        """The DER element at `i`: tag, value, where the next one starts. Short-form lengths only:
        an Ed25519 key is under 128 bytes."""
        if i + 2 > len(buf) or buf[i + 1] >= 0x80 or i + 2 + buf[i + 1] > len(buf):
            bad()
        end = i + 2 + buf[i + 1]
        return buf[i], buf[i + 2:end], end

    lines = pem.decode("ascii", "replace").strip().splitlines()
    if len(lines) < 3 or lines[0] != "-----BEGIN PRIVATE KEY-----" or lines[-1] != "-----END PRIVATE KEY-----":
        bad("not a PEM private key (-----BEGIN PRIVATE KEY-----)")
    try:
        der = base64.b64decode("".join(lines[1:-1]), validate=True)
    except ValueError:
        bad("the PEM body is not base64")
    tag, seq, _ = tlv(der, 0)
    if tag != 0x30:
        bad()
    tag, version, i = tlv(seq, 0)
    if tag != 0x02 or version not in (b"\x00", b"\x01"):
        bad()
    tag, algorithm, i = tlv(seq, i)
    if tag != 0x30 or algorithm != bytes.fromhex("06032b6570"):  # OID 1.3.101.112, no parameters
        bad()
    tag, secret, i = tlv(seq, i)
    seed_tag, seed, _ = tlv(secret, 0)
    if tag != 0x04 or seed_tag != 0x04 or len(seed) != 32:
        bad()
    key = Ed25519PrivateKey.from_private_bytes(seed)
    while i < len(seq):  # [0] attributes, [1] the public key as a BIT STRING (0 unused bits)
        tag, value, i = tlv(seq, i)
        if tag == 0x81 and value != b"\x00" + key.public_key().public_bytes_raw():
            bad("the public key in the file does not match its secret key")
    return key


def pae(payload_type: bytes, body: bytes) -> bytes:
    """DSSE pre-authentication encoding: "DSSEv1" SP len(type) SP type SP len(body) SP body,
    lengths in ASCII decimal bytes."""
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type, len(body), body)


def sign_body(key: Ed25519PrivateKey, key_id: str, body: event_pb2.EventBody) -> event_pb2.SignedEvent:
    """Encodes the body ONCE and signs exactly those bytes. The server stores and verifies the
    bytes as sent and never re-encodes them, so keep this SignedEvent to resend it."""
    body_bytes = body.SerializeToString()
    signature = key.sign(pae(EVENT_PAYLOAD_TYPE, body_bytes))  # 64 bytes, raw Ed25519
    return event_pb2.SignedEvent(body=body_bytes, key_id=key_id, signature=signature)


# ----------------------------------------------------------------------------------------------
# Building the event
# ----------------------------------------------------------------------------------------------

def uuid7() -> str:
    """A UUIDv7 (RFC 9562): event ids must be version 7 (Python 3.14 has uuid.uuid7())."""
    if hasattr(uuid, "uuid7"):
        return str(uuid.uuid7())
    ms = time.time_ns() // 1_000_000
    value = (ms & (2**48 - 1)) << 80 | int.from_bytes(os.urandom(10), "big")
    value = (value & ~(0xF << 76)) | (0x7 << 76)  # version 7
    value = (value & ~(0x3 << 62)) | (0x2 << 62)  # RFC 9562 variant
    return str(uuid.UUID(int=value))


def timestamp(t: datetime.datetime) -> Timestamp:
    ts = Timestamp()
    ts.FromDatetime(t)
    return ts


def encompass_notification(a: argparse.Namespace) -> tuple[str, event_pb2.EventBody]:
    """An Operation Encompass notification to the school, as an unsigned EventBody."""
    notification_id = str(uuid.uuid4())  # any UUID; names the stream
    child_id = str(uuid.uuid4())
    now = datetime.datetime.now(datetime.timezone.utc)
    payload = catalogue_pb2.EncompassNotificationSent(
        notification_id=notification_id,
        incident_ref="MPS-DA-2026-0042",
        child=catalogue_pb2.EncompassChild(
            child_id=child_id,
            name="Child A",
            date_of_birth="2016-04-01",
            present=True,
            whereabouts="upstairs bedroom",
            voice_of_child="said she was frightened by the shouting",
        ),
        establishment_urn=a.urn,  # set exactly one of establishment_urn and local_authority
        recipient_role="dsl",
        incident_summary="Saturday 23:10, the family home",
        circumstances="Police attended a verbal argument between the adults; the child was awake",
        deadline=timestamp(now + datetime.timedelta(hours=36)),  # before the next school day
    )
    body = event_pb2.EventBody(
        event_id=uuid7(),  # the idempotency key: a resend with the same bytes gets the same receipt
        stream=f"encompass-{notification_id}",
        expected_version=event_pb2.ExpectedVersion(no_stream=event_pb2.Empty()),  # a new stream
        event_type="accord.v1.EncompassNotificationSent",  # the payload's full message name
        schema_version=1,
        payload=payload.SerializeToString(),
        author=event_pb2.Author(agency=a.agency, user=a.user, role=a.role),
        occurred_at=timestamp(now),
        legal_basis=event_pb2.LegalBasis(statute="DAA2021-s49A", purpose="Operation Encompass notification"),
        subjects=[event_pb2.Subject(kind="child", id=child_id)],  # must include the child
        addressees=[a.school],  # exactly the receiving school
        regime=event_pb2.REGIME_PART3,
        classification=event_pb2.CLASSIFICATION_OFFICIAL_SENSITIVE,
    )
    return notification_id, body


# ----------------------------------------------------------------------------------------------
# Calls
# ----------------------------------------------------------------------------------------------

def channel(endpoint: str) -> grpc.Channel:
    # Read-model answers can exceed gRPC's default 4 MiB receive limit (the Rust SDK allows 16).
    options = [("grpc.max_receive_message_length", 16 * 1024 * 1024)]
    if endpoint.startswith("https://"):
        return grpc.secure_channel(endpoint.removeprefix("https://"), grpc.ssl_channel_credentials(), options)
    return grpc.insecure_channel(endpoint.removeprefix("http://"), options)


RETRY = (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)


def call(what: str, rpc, request, metadata, attempts: int = 5):
    """Calls `rpc`, retrying when the server is unavailable or the outcome is unknown (a timeout).
    Safe for appends too: the same signed bytes are resent, and the server answers a resend of a
    recorded event with its original receipt."""
    delay = 0.05
    for attempt in range(attempts):
        try:
            return rpc(request, metadata=metadata, timeout=30)
        except grpc.RpcError as e:
            if e.code() in RETRY and attempt + 1 < attempts:
                time.sleep(delay)
                delay *= 2
                continue
            fail(f"{what} failed: {e.code().name}: {e.details()}")


def leaf_hash(receipt: ledger_pb2.Receipt, signed: event_pb2.SignedEvent, stream: str) -> bytes:
    """The Merkle leaf hash the server must have computed for our event (ledger.proto,
    `RecordedEvent`): SHA-256(0x00 || leaf), integers big-endian, `u32 len` before each string."""
    recorded_us = receipt.recorded_at.seconds * 1_000_000 + receipt.recorded_at.nanos // 1000

    def with_len(b: bytes) -> bytes:
        return struct.pack(">I", len(b)) + b

    leaf = (b"accord.leaf.v1" + struct.pack(">Qq", receipt.position, recorded_us)
            + with_len(stream.encode()) + struct.pack(">Q", receipt.stream_version)
            + with_len(signed.key_id.encode()) + with_len(signed.signature)
            + hashlib.sha256(signed.body).digest())
    return hashlib.sha256(b"\x00" + leaf).digest()


def find_in_inbox(views, metadata, notification_id: str, position: int, wait: float):
    """Pages the school inbox newest first until the item is found. Read models follow the log a
    moment behind the append: wait until the answer's log_size is past our position."""
    deadline = time.monotonic() + wait
    while True:
        request = views_pb2.QueryViewRequest(model=views_pb2.READ_MODEL_SCHOOL_INBOX, newest_first=True, limit=50)
        first = call("Views.Query", views.Query, request, metadata)
        if first.log_size > position:
            break
        if time.monotonic() > deadline:
            fail(f"the school inbox did not reach position {position} within {wait}s (log size {first.log_size})")
        time.sleep(0.1)
    response = first
    for _ in range(20):  # at most 20 pages of 50
        for item in response.items:
            if item.item_id == notification_id:
                return first, item
        if len(response.items) < request.limit:
            break
        request.before_position = response.items[-1].position
        response = call("Views.Query", views.Query, request, metadata)
    fail(f"notification {notification_id} is not in {args.school}'s inbox: is it the addressee, "
         "and does the DSL token's agency match?")


def when(ts: Timestamp) -> str:
    return ts.ToDatetime(tzinfo=datetime.timezone.utc).isoformat(timespec="seconds")


def main() -> None:
    key = load_key(args.key)
    notification_id, body = encompass_notification(args)
    signed = sign_body(key, args.key_id, body)

    with channel(args.endpoint) as ch:
        # Append, as the police officer. Appends need no accord-purpose: the legal basis and its
        # purpose are inside the signed body.
        ledger = ledger_pb2_grpc.LedgerStub(ch)
        police = [("authorization", f"Bearer {args.police_token}")]
        response = call("Ledger.Append", ledger.Append, ledger_pb2.AppendRequest(events=[signed]), police)
        receipt = response.receipts[0]
        if receipt.event_id != body.event_id:
            fail(f"the receipt is for event {receipt.event_id}, not {body.event_id}")
        if receipt.leaf_hash != leaf_hash(receipt, signed, body.stream):
            fail("the receipt's leaf hash does not match the event we signed")
        print(f"appended {body.event_type} {notification_id} from {args.agency} to {args.school}")
        print(f"receipt: event_id={receipt.event_id} position={receipt.position} "
              f"stream_version={receipt.stream_version} recorded_at={when(receipt.recorded_at)} "
              f"leaf_hash={receipt.leaf_hash.hex()} (matches what we signed)")

        # Read the school's inbox, as its DSL. Every read states its purpose; it is recorded,
        # with the caller and what was returned, in the access log.
        views = views_pb2_grpc.ViewsStub(ch)
        dsl = [("authorization", f"Bearer {args.dsl_token}"), ("accord-purpose", args.purpose)]
        answer, item = find_in_inbox(views, dsl, notification_id, receipt.position, args.wait)
        n = item.notification
        print(f"inbox of {args.school}: {len(answer.items)} item(s) on the first page, as of log size "
              f"{answer.log_size}, policy version {answer.policy_version}")
        print(f"notification {n.notification_id} from {item.source_agency} at position={item.position}: "
              f"incident {n.incident_ref}, sent {when(n.sent_at)}, due by {when(n.deadline)}")
        print(f"  child: {n.child.name} (born {n.child.date_of_birth}), present: {n.child.present}, "
              f"whereabouts: {n.child.whereabouts}")
        print(f"  voice of the child: {n.child.voice_of_child}")
        print(f"  circumstances: {n.circumstances}")
        print(f"  acknowledged: {n.acknowledged}, overdue: {n.overdue}")
        print(f"  views: {', '.join(item.views)}; withheld field groups: {', '.join(item.redacted_groups) or 'none'}")
        print(f"  allowed by: {', '.join(item.policy_ids)}")


if __name__ == "__main__":
    main()

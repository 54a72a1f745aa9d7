"""gRPC ⇄ domain for ContactsService: one class assembled from per-area RPC mixins."""

from __future__ import annotations

from switchboard.contacts.v1 import contacts_service_pb2_grpc

from switchboard.server.contacts.domain import ContactsDomain
from switchboard.server.contacts.rpc_consent import ConsentRpcs
from switchboard.server.contacts.rpc_contacts import ContactRpcs
from switchboard.server.contacts.rpc_jobs import ContactJobRpcs
from switchboard.server.contacts.rpc_tokens import TokenRpcs


class ContactsServicer(
    ContactRpcs,
    ConsentRpcs,
    TokenRpcs,
    ContactJobRpcs,
    contacts_service_pb2_grpc.ContactsServiceServicer,
):
    """Each area's RPCs live in a mixin module (rpc_*.py) listed as a base here."""

    def __init__(self, domain: ContactsDomain) -> None:
        self.domain = domain

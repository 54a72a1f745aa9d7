"""ContactsService RPCs for contacts, fast access rules, groups and their members, and the
domain's event stream. Proto ⇄ plain data only; the rules live in the services."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial
from typing import Any

from google.protobuf import empty_pb2
from switchboard.common.v1 import resource_pb2
from switchboard.contacts.v1 import (
    consent_pb2,
    contact_group_pb2,
    contact_job_pb2,
    contact_pb2,
    fast_access_pb2,
)
from switchboard.contacts.v1 import contacts_service_pb2 as pb

from switchboard.server.contacts.domain import ContactsDomain
from switchboard.server.contacts.models import JobState
from switchboard.server.core import streams
from switchboard.server.core.context import current_principal
from switchboard.server.core.errors import FieldViolation, validation_error
from switchboard.server.core.events import Heartbeat
from switchboard.server.core.models import EventRecord
from switchboard.server.core.protomap import (
    body_version,
    event_envelope,
    list_response,
    once_per_event,
    present,
    to_message,
)
from switchboard.server.core.types import Context
from switchboard.server.core.validation import Checks

EVENT_PREFIXES = (
    "contact.",
    "contact_group.",
    "contact_address_status.",
    "contact_import_job.",
    "contact_export_job.",
    "fast_access_rule.",
)
# Event type prefix → the ContactsEvent field carrying the resource, and its message.
_EVENT_RESOURCES: dict[str, tuple[str, Any]] = {
    "contact.": ("contact", contact_pb2.Contact),
    "contact_group.": ("contact_group", contact_group_pb2.ContactGroup),
    "contact_address_status.": ("contact_address_status", consent_pb2.ContactAddressStatus),
    "contact_import_job.": ("contact_import_job", contact_job_pb2.ContactImportJob),
    "contact_export_job.": ("contact_export_job", contact_job_pb2.ContactExportJob),
}
_JOB_PREFIXES = ("contact_import_job.", "contact_export_job.")


class ContactRpcs:
    domain: ContactsDomain

    # -- contacts ------------------------------------------------------------------------------

    async def ListContacts(
        self, request: pb.ListContactsRequest, context: Context
    ) -> pb.ListContactsResponse:
        org = current_principal().org
        return await list_response(
            request,
            pb.ListContactsResponse,
            "contacts",
            lambda given, page, checks: self.domain.contacts.list_page(
                org, given, request.criteria, page, checks
            ),
        )

    async def CreateContact(
        self, request: pb.CreateContactRequest, context: Context
    ) -> resource_pb2.ResourceId:
        body = present(request.body)
        _refuse_id(body)
        principal = current_principal()
        contact_id = await self.domain.contacts.create(principal.org, principal.subject, body)
        return resource_pb2.ResourceId(id=contact_id)

    async def GetContact(
        self, request: pb.GetContactRequest, context: Context
    ) -> contact_pb2.Contact:
        data = await self.domain.contacts.get(current_principal().org, request.contact_id)
        return to_message(contact_pb2.Contact, data)

    async def UpdateContact(
        self, request: pb.UpdateContactRequest, context: Context
    ) -> resource_pb2.ResourceId:
        body = present(request.body)
        _refuse_id(body)
        await self.domain.contacts.update(
            current_principal().org, request.contact_id, body, body_version(request.body, context)
        )
        return resource_pb2.ResourceId(id=request.contact_id)

    async def ReplaceContact(
        self, request: pb.ReplaceContactRequest, context: Context
    ) -> empty_pb2.Empty:
        body = present(request.body)
        _refuse_id(body)
        await self.domain.contacts.update(
            current_principal().org,
            request.contact_id,
            body,
            body_version(request.body, context),
            replace=True,
        )
        return empty_pb2.Empty()

    async def DeleteContact(
        self, request: pb.DeleteContactRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.contacts.delete(current_principal().org, request.contact_id)
        return empty_pb2.Empty()

    # -- fast access rules ---------------------------------------------------------------------

    async def ListFastAccessRules(
        self, request: pb.ListFastAccessRulesRequest, context: Context
    ) -> pb.ListFastAccessRulesResponse:
        return await list_response(
            request,
            pb.ListFastAccessRulesResponse,
            "rules",
            partial(self.domain.fast_access.list_page, current_principal().org),
        )

    async def CreateFastAccessRule(
        self, request: pb.CreateFastAccessRuleRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        rule_id = await self.domain.fast_access.create(
            principal.org, principal.subject, present(request.body)
        )
        return resource_pb2.ResourceId(id=rule_id)

    async def GetFastAccessRule(
        self, request: pb.GetFastAccessRuleRequest, context: Context
    ) -> fast_access_pb2.FastAccessRule:
        data = await self.domain.fast_access.get(current_principal().org, request.rule_id)
        return to_message(fast_access_pb2.FastAccessRule, data)

    async def UpdateFastAccessRule(
        self, request: pb.UpdateFastAccessRuleRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.fast_access.update(
            current_principal().org,
            request.rule_id,
            present(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.rule_id)

    async def DeleteFastAccessRule(
        self, request: pb.DeleteFastAccessRuleRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.fast_access.delete(current_principal().org, request.rule_id)
        return empty_pb2.Empty()

    # -- groups --------------------------------------------------------------------------------

    async def ListContactGroups(
        self, request: pb.ListContactGroupsRequest, context: Context
    ) -> pb.ListContactGroupsResponse:
        return await list_response(
            request,
            pb.ListContactGroupsResponse,
            "contact_groups",
            partial(self.domain.groups.list_page, current_principal().org),
        )

    async def CreateContactGroup(
        self, request: pb.CreateContactGroupRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        group_id = await self.domain.groups.create(
            principal.org, principal.subject, present(request.body)
        )
        return resource_pb2.ResourceId(id=group_id)

    async def GetContactGroup(
        self, request: pb.GetContactGroupRequest, context: Context
    ) -> contact_group_pb2.ContactGroup:
        data = await self.domain.groups.get(current_principal().org, request.group_id)
        return to_message(contact_group_pb2.ContactGroup, data)

    async def UpdateContactGroup(
        self, request: pb.UpdateContactGroupRequest, context: Context
    ) -> resource_pb2.ResourceId:
        await self.domain.groups.update(
            current_principal().org,
            request.group_id,
            present(request.body),
            body_version(request.body, context),
        )
        return resource_pb2.ResourceId(id=request.group_id)

    async def ReplaceContactGroup(
        self, request: pb.ReplaceContactGroupRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.groups.update(
            current_principal().org,
            request.group_id,
            present(request.body),
            body_version(request.body, context),
            replace=True,
        )
        return empty_pb2.Empty()

    async def DeleteContactGroup(
        self, request: pb.DeleteContactGroupRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.groups.delete(current_principal().org, request.group_id)
        return empty_pb2.Empty()

    async def ListGroupContacts(
        self, request: pb.ListGroupContactsRequest, context: Context
    ) -> pb.ListGroupContactsResponse:
        return await list_response(
            request,
            pb.ListGroupContactsResponse,
            "contacts",
            partial(self.domain.groups.list_members, current_principal().org, request.group_id),
        )

    async def AddGroupContact(
        self, request: pb.AddGroupContactRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        contact_id = await self.domain.groups.add_member(
            principal.org, principal.subject, request.group_id, present(request.body)
        )
        return resource_pb2.ResourceId(id=contact_id)

    async def GetGroupContact(
        self, request: pb.GetGroupContactRequest, context: Context
    ) -> contact_pb2.Contact:
        data = await self.domain.groups.get_member(
            current_principal().org, request.group_id, request.contact_id
        )
        return to_message(contact_pb2.Contact, data)

    async def RemoveGroupContact(
        self, request: pb.RemoveGroupContactRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.groups.remove_member(
            current_principal().org, request.group_id, request.contact_id
        )
        return empty_pb2.Empty()

    # -- events --------------------------------------------------------------------------------

    async def StreamContactsEvents(
        self, request: pb.StreamContactsEventsRequest, context: Context
    ) -> AsyncIterator[pb.ContactsEvent]:
        checks = Checks()
        # The one stream contract's filters: ids, type patterns (`contact.*`) and states.
        types, prefixes = streams.type_patterns(request.types, EVENT_PREFIXES, checks)
        resource_ids = streams.id_list(request.resource_ids, checks, "resource_ids")
        states = streams.states(request.states, JobState, checks)
        heartbeat = streams.heartbeat(request.heartbeat_seconds, checks)
        checks.raise_if_failed()
        feed = self.domain.feed
        # The proto: "0 or empty starts at the stream's beginning of time" (unlike SMS and
        # communications, where empty means from now on).
        after = await feed.start_cursor(request.after or "0")
        async for item in feed.follow(
            org_id=current_principal().org,
            after=after,
            types=types,
            type_prefixes=prefixes,
            resource_ids=resource_ids,
            heartbeat_seconds=heartbeat,
            started=context.send_initial_metadata,
        ):
            # States are an import or export job's: the other resources have none, and pass.
            if (
                states
                and isinstance(item, EventRecord)
                and item.type.startswith(_JOB_PREFIXES)
                and item.payload.get("state") not in states
            ):
                continue
            yield _event(item)


def _refuse_id(body: dict[str, Any]) -> None:
    if "id" in body:
        raise validation_error(
            [FieldViolation("id", "is assigned by the server (only group membership takes it)")]
        )


@once_per_event
def _event(item: EventRecord | Heartbeat) -> pb.ContactsEvent:
    event = pb.ContactsEvent(envelope=event_envelope(item))
    if isinstance(item, Heartbeat):
        return event
    for prefix, (field, message) in _EVENT_RESOURCES.items():
        if item.type.startswith(prefix):
            getattr(event, field).CopyFrom(to_message(message, item.payload))
            break
    return event

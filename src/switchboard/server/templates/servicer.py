"""gRPC ⇄ domain for TemplatesService. Proto messages become plain dicts (proto field names) for
the services, and their snapshots become the `{commit, id, data}` envelopes of the
Communications API, with each RPC's documented HTTP status."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message
from switchboard.templates.v1 import (
    communication_type_pb2,
    deployment_pb2,
    example_pb2,
    template_pb2,
    templates_service_pb2_grpc,
)
from switchboard.templates.v1 import templates_service_pb2 as pb

from switchboard.server.core import protomap
from switchboard.server.core.context import (
    current_principal,
    set_http_status,
    set_response_header,
)
from switchboard.server.core.version import server_version
from switchboard.server.templates import catalog
from switchboard.server.templates.domain import TemplatesDomain

PACKAGE_FILENAME = "deployment-package.json"


def values(message: Message) -> dict[str, Any]:
    """A request body as the services take it: proto field names, set fields only."""
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _templates(snapshots: list[dict[str, Any]]) -> template_pb2.TemplatesResponse:
    return template_pb2.TemplatesResponse(
        commit=server_version(),
        data=[protomap.to_message(template_pb2.Template, s) for s in snapshots],
    )


def _template(snapshot: Mapping[str, Any]) -> template_pb2.TemplateResponse:
    return template_pb2.TemplateResponse(
        commit=server_version(),
        id=snapshot["id"],
        data=protomap.to_message(template_pb2.Template, snapshot),
    )


def _validation(snapshot: Mapping[str, Any]) -> template_pb2.TemplateValidationResponse:
    return template_pb2.TemplateValidationResponse(
        commit=server_version(),
        id=snapshot.get("template_id", ""),
        data=protomap.to_message(template_pb2.TemplateValidation, snapshot),
    )


def _type(kind: catalog.CommunicationType) -> communication_type_pb2.CommunicationTypeResponse:
    return communication_type_pb2.CommunicationTypeResponse(
        commit=server_version(),
        id=kind.code,
        data=protomap.to_message(communication_type_pb2.CommunicationType, catalog.snapshot(kind)),
    )


def _example(snapshot: Mapping[str, Any]) -> example_pb2.ExampleResponse:
    return example_pb2.ExampleResponse(
        commit=server_version(),
        id=snapshot["id"],
        data=protomap.to_message(example_pb2.Example, snapshot),
    )


def _org(request_org: str) -> str:
    current_principal().require_org(request_org)
    return request_org


class TemplatesServicer(templates_service_pb2_grpc.TemplatesServiceServicer):
    def __init__(self, domain: TemplatesDomain) -> None:
        self.domain = domain

    # -- communication types -------------------------------------------------------------------

    async def ListCommunicationTypes(
        self, request: pb.ListCommunicationTypesRequest, context: grpc.aio.ServicerContext
    ) -> communication_type_pb2.CommunicationTypesResponse:
        kinds = await self.domain.types.list_types(request.limit, request.offset)
        return communication_type_pb2.CommunicationTypesResponse(
            commit=server_version(),
            data=[
                protomap.to_message(communication_type_pb2.CommunicationType, catalog.snapshot(k))
                for k in kinds
            ],
        )

    async def GetCommunicationType(
        self, request: pb.GetCommunicationTypeRequest, context: grpc.aio.ServicerContext
    ) -> communication_type_pb2.CommunicationTypeResponse:
        kind = await self.domain.types.require_type(request.type_code)
        set_http_status(202)
        return _type(kind)

    async def PutCommunicationType(
        self, request: pb.PutCommunicationTypeRequest, context: grpc.aio.ServicerContext
    ) -> communication_type_pb2.CommunicationTypeResponse:
        principal = current_principal()
        kind, _ = await self.domain.types.put_type(
            principal.org, request.type_code, values(request.body)
        )
        return _type(kind)

    # -- templates -----------------------------------------------------------------------------

    async def ListTemplates(
        self, request: pb.ListTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplatesResponse:
        org = _org(request.org)
        found = await self.domain.templates.search(
            org,
            protomap.given_filters(request),
            change_type=None,
            limit=request.limit,
            offset=request.offset,
        )
        return _templates(found)

    async def CreateTemplate(
        self, request: pb.CreateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplateResponse:
        org = _org(request.org)
        created = await self.domain.templates.create_stable(
            org, current_principal().subject, values(request.body)
        )
        set_http_status(202)
        return _template(created)

    async def ListBetaTemplates(
        self, request: pb.ListBetaTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplatesResponse:
        org = _org(request.org)
        found = await self.domain.templates.search(
            org,
            protomap.given_filters(request, exclude=("change_type",)),
            change_type=request.change_type if request.HasField("change_type") else None,
            limit=request.limit,
            offset=request.offset,
        )
        return _templates(found)

    async def CreateDraftTemplate(
        self, request: pb.CreateDraftTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplateResponse:
        org = _org(request.org)
        created = await self.domain.templates.create_draft(
            org, current_principal().subject, values(request.body)
        )
        set_http_status(202)
        return _template(created)

    async def UpdateDraftTemplate(
        self, request: pb.UpdateDraftTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplateResponse:
        org = _org(request.org)
        updated = await self.domain.templates.update_draft(
            org, current_principal().subject, values(request.body)
        )
        return _template(updated)

    async def DeleteTemplates(
        self, request: pb.DeleteTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplatesResponse:
        org = _org(request.org)
        deleted = await self.domain.templates.delete(
            org,
            request.type,
            request.channel,
            request.language,
            request.change_type if request.HasField("change_type") else None,
        )
        return _templates(deleted)

    async def ListTemplateHistory(
        self, request: pb.ListTemplateHistoryRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplatesResponse:
        org = _org(request.org)
        found = await self.domain.templates.history(
            org, request.type, request.channel, request.language
        )
        return _templates(found)

    async def PreviewTemplate(
        self, request: pb.PreviewTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplatePreviewResponse:
        _org(request.org)
        preview = await self.domain.templates.preview(values(request.body))
        return template_pb2.TemplatePreviewResponse(
            commit=server_version(),
            data=protomap.to_message(template_pb2.TemplatePreview, preview),
        )

    async def ValidateTemplatePreview(
        self, request: pb.ValidateTemplatePreviewRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplateValidationResponse:
        _org(request.org)
        validation = await self.domain.templates.preview_validate(values(request.body))
        set_http_status(202)
        return _validation(validation)

    async def ValidateTemplate(
        self, request: pb.ValidateTemplateRequest, context: grpc.aio.ServicerContext
    ) -> template_pb2.TemplateValidationResponse:
        org = _org(request.org)
        validation = await self.domain.templates.validate_stored(
            org,
            request.type,
            request.language,
            request.channel,
            request.change_type if request.HasField("change_type") else None,
        )
        set_http_status(202)
        return _validation(validation)

    async def CommitTemplates(
        self, request: pb.CommitTemplatesRequest, context: grpc.aio.ServicerContext
    ) -> deployment_pb2.CommitResponse:
        principal = current_principal()
        body = values(request)
        commit_id, result = await self.domain.templates.commit(
            principal.org, body.get("commit_items", []), body.get("deleted_items", [])
        )
        set_http_status(202)
        return deployment_pb2.CommitResponse(
            commit=server_version(),
            id=commit_id,
            data=protomap.to_message(deployment_pb2.CommitResult, result),
        )

    # -- deployment ----------------------------------------------------------------------------

    async def DownloadTemplatePackage(
        self, request: pb.DownloadTemplatePackageRequest, context: grpc.aio.ServicerContext
    ) -> deployment_pb2.DeploymentPackageResponse:
        org = _org(request.org)
        package = await self.domain.deployment.download(org, values(request).get("download", []))
        # Documented: "Returns a JSON deployment package as an attachment".
        set_response_header("content-disposition", f'attachment; filename="{PACKAGE_FILENAME}"')
        return protomap.to_message(deployment_pb2.DeploymentPackageResponse, package)

    async def ImportTemplatePackage(
        self, request: pb.ImportTemplatePackageRequest, context: grpc.aio.ServicerContext
    ) -> deployment_pb2.DeploymentImportResponse:
        org = _org(request.org)
        principal = current_principal()
        package_id, result = await self.domain.deployment.import_package(
            org,
            principal.subject,
            principal.roles,
            request.body.content_type,
            request.body.data,
        )
        return deployment_pb2.DeploymentImportResponse(
            commit=server_version(),
            id=package_id,
            data=protomap.to_message(deployment_pb2.DeploymentImportResult, result),
        )

    # -- examples ------------------------------------------------------------------------------

    async def GetExample(
        self, request: pb.GetExampleRequest, context: grpc.aio.ServicerContext
    ) -> example_pb2.ExampleResponse:
        org = _org(request.org)
        example = await self.domain.examples.get(org, request.example_id)
        set_http_status(202)
        return _example(example)

    async def PutExample(
        self, request: pb.PutExampleRequest, context: grpc.aio.ServicerContext
    ) -> example_pb2.ExampleResponse:
        org = _org(request.org)
        example, _ = await self.domain.examples.put(
            org, current_principal().subject, request.example_id, values(request.body)
        )
        return _example(example)

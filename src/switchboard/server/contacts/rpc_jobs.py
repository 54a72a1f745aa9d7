"""ContactsService RPCs for contact import and export jobs and their files. Proto ⇄ plain data
only; the rules live in contacts/jobs.py, the work in workers/contact_jobs.py."""

from __future__ import annotations

from collections.abc import AsyncIterator
from functools import partial

from google.api import httpbody_pb2
from google.protobuf import empty_pb2
from switchboard.common.v1 import resource_pb2
from switchboard.contacts.v1 import contact_job_pb2
from switchboard.contacts.v1 import contacts_service_pb2 as pb

from switchboard.server.contacts import jobs
from switchboard.server.contacts.domain import ContactsDomain
from switchboard.server.core.context import current_principal
from switchboard.server.core.protomap import list_response, to_message
from switchboard.server.core.types import Context


class ContactJobRpcs:
    domain: ContactsDomain

    # -- import --------------------------------------------------------------------------------

    async def UploadContactImportFile(
        self, request_iterator: AsyncIterator[pb.UploadContactImportFileRequest], context: Context
    ) -> pb.UploadContactImportFileResponse:
        principal = current_principal()

        async def pieces() -> AsyncIterator[bytes]:
            async for message in request_iterator:
                yield message.data

        attachment_id, size = await self.domain.jobs.upload(
            principal.org, principal.subject, pieces()
        )
        return pb.UploadContactImportFileResponse(
            import_attachment_id=attachment_id, size_bytes=size
        )

    async def CreateContactImportJob(
        self, request: pb.CreateContactImportJobRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        job_id = await self.domain.jobs.create_import(
            principal.org,
            principal.subject,
            contact_group_id=request.contact_group_id.strip(),
            import_attachment_id=request.import_attachment_id.strip(),
            csv_text=request.csv,
        )
        return resource_pb2.ResourceId(id=job_id)

    async def ListContactImportJobs(
        self, request: pb.ListContactImportJobsRequest, context: Context
    ) -> pb.ListContactImportJobsResponse:
        return await list_response(
            request,
            pb.ListContactImportJobsResponse,
            "contact_import_jobs",
            partial(self.domain.jobs.list_imports, current_principal().org),
        )

    async def GetContactImportJob(
        self, request: pb.GetContactImportJobRequest, context: Context
    ) -> contact_job_pb2.ContactImportJob:
        data = await self.domain.jobs.get_import(current_principal().org, request.job_id)
        return to_message(contact_job_pb2.ContactImportJob, data)

    async def DeleteContactImportJob(
        self, request: pb.DeleteContactImportJobRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.jobs.delete_import(current_principal().org, request.job_id)
        return empty_pb2.Empty()

    # -- export --------------------------------------------------------------------------------

    async def CreateContactExportJob(
        self, request: pb.CreateContactExportJobRequest, context: Context
    ) -> resource_pb2.ResourceId:
        principal = current_principal()
        job_id = await self.domain.jobs.create_export(
            principal.org, principal.subject, request.contact_group_id.strip()
        )
        return resource_pb2.ResourceId(id=job_id)

    async def ListContactExportJobs(
        self, request: pb.ListContactExportJobsRequest, context: Context
    ) -> pb.ListContactExportJobsResponse:
        return await list_response(
            request,
            pb.ListContactExportJobsResponse,
            "contact_export_jobs",
            partial(self.domain.jobs.list_exports, current_principal().org),
        )

    async def GetContactExportJob(
        self, request: pb.GetContactExportJobRequest, context: Context
    ) -> contact_job_pb2.ContactExportJob:
        data = await self.domain.jobs.get_export(current_principal().org, request.job_id)
        return to_message(contact_job_pb2.ContactExportJob, data)

    async def DeleteContactExportJob(
        self, request: pb.DeleteContactExportJobRequest, context: Context
    ) -> empty_pb2.Empty:
        await self.domain.jobs.delete_export(current_principal().org, request.job_id)
        return empty_pb2.Empty()

    async def DownloadContactExport(
        self, request: pb.DownloadContactExportRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        # Checked before the first message, so a refusal is a plain error status (404 / 400).
        chunks = await self.domain.jobs.export_file(current_principal().org, request.job_id)
        async for body in _csv_bodies(chunks):
            yield body

    async def DownloadContactImportFailures(
        self, request: pb.DownloadContactImportFailuresRequest, context: Context
    ) -> AsyncIterator[httpbody_pb2.HttpBody]:
        chunks = await self.domain.jobs.failures_file(current_principal().org, request.job_id)
        async for body in _csv_bodies(chunks):
            yield body


async def _csv_bodies(chunks: AsyncIterator[bytes]) -> AsyncIterator[httpbody_pb2.HttpBody]:
    """A CSV file as HttpBody messages: the transcoder takes the type from the first one."""
    content_type = jobs.CSV_CONTENT_TYPE + "; charset=utf-8"
    async for data in chunks:
        yield httpbody_pb2.HttpBody(content_type=content_type, data=data)
        content_type = ""
    if content_type:  # an empty file still answers with its content type
        yield httpbody_pb2.HttpBody(content_type=content_type)

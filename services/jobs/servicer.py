"""gRPC servicers of the jobs process: `JobService` and `ApiKeyService`. Proto <-> domain only."""

from __future__ import annotations

from cohort.api.identity.v1 import identity_pb2, identity_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.context import require_identity
from cohort.identity import ApiKeyRecord, ApiKeyStore
from cohort.paging import DEFAULT_PAGE_SIZE
from cohort.services.jobs.service import JobService
from cohort.timestamps import to_timestamp


class JobServiceServicer(jobs_pb2_grpc.JobServiceServicer):
    def __init__(self, service: JobService) -> None:
        self._service = service
        # The last WatchJob response and the snapshot it holds: a change reaches every watcher as
        # one snapshot object, so a thousand watchers share one response instead of copying it each.
        self._last_watch: tuple[jobs_pb2.Job | None, bool, jobs_pb2.WatchJobResponse | None] = (
            None,
            False,
            None,
        )

    async def CreateJob(self, request, context):
        return await self._service.create(request)

    async def GetJob(self, request, context):
        return jobs_pb2.GetJobResponse(job=await self._service.get(request.job_id))

    async def ListJobs(self, request, context):
        jobs, next_token = await self._service.list(
            list(request.states), request.page_size or DEFAULT_PAGE_SIZE, request.page_token
        )
        return jobs_pb2.ListJobsResponse(jobs=jobs, next_page_token=next_token)

    async def WatchJob(self, request, context):
        async for job, heartbeat in self._service.watch(request.job_id, request.after_revision):
            yield self._watch_response(job, heartbeat)

    def _watch_response(self, job: jobs_pb2.Job, heartbeat: bool) -> jobs_pb2.WatchJobResponse:
        last_job, last_heartbeat, response = self._last_watch
        if last_job is not job or last_heartbeat != heartbeat or response is None:
            response = jobs_pb2.WatchJobResponse(job=job, heartbeat=heartbeat)
            self._last_watch = (job, heartbeat, response)
        return response

    async def PauseJob(self, request, context):
        return jobs_pb2.PauseJobResponse(job=await self._service.pause(request))

    async def ResumeJob(self, request, context):
        return jobs_pb2.ResumeJobResponse(job=await self._service.resume(request))

    async def CancelJob(self, request, context):
        return jobs_pb2.CancelJobResponse(job=await self._service.cancel(request))

    async def RelaunchJob(self, request, context):
        return jobs_pb2.RelaunchJobResponse(job=await self._service.relaunch(request))

    async def EvaluateJob(self, request, context):
        return jobs_pb2.EvaluateJobResponse(evaluation=await self._service.evaluate(request))


def api_key_to_proto(record: ApiKeyRecord) -> identity_pb2.ApiKey:
    return identity_pb2.ApiKey(
        key_id=record.id,
        tenant_id=record.tenant_id,
        display_name=record.name,
        admin=record.is_admin,
        create_time=to_timestamp(record.created_at),
        last_use_time=to_timestamp(record.last_used_at),
        revoke_time=to_timestamp(record.revoked_at),
    )


class ApiKeyServicer(identity_pb2_grpc.ApiKeyServiceServicer):
    def __init__(self, store: ApiKeyStore) -> None:
        self._store = store

    async def CreateApiKey(self, request, context):
        record, secret = await self._store.create_key(
            require_identity(),
            request.display_name,
            tenant_id=request.tenant_id or None,
            is_admin=request.admin,
        )
        return identity_pb2.CreateApiKeyResponse(api_key=api_key_to_proto(record), secret=secret)

    async def GetApiKey(self, request, context):
        record = await self._store.get_key(require_identity(), request.key_id)
        return identity_pb2.GetApiKeyResponse(api_key=api_key_to_proto(record))

    async def ListApiKeys(self, request, context):
        records, next_token = await self._store.list_keys(
            require_identity(),
            include_revoked=request.include_revoked,
            page_size=request.page_size or DEFAULT_PAGE_SIZE,
            page_token=request.page_token,
        )
        return identity_pb2.ListApiKeysResponse(
            api_keys=[api_key_to_proto(r) for r in records], next_page_token=next_token
        )

    async def RevokeApiKey(self, request, context):
        record = await self._store.revoke_key(require_identity(), request.key_id)
        return identity_pb2.RevokeApiKeyResponse(api_key=api_key_to_proto(record))

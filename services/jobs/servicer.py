"""gRPC servicer of `cohort.api.jobs.v1.JobService`. Proto <-> domain only."""

from __future__ import annotations

from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.paging import DEFAULT_PAGE_SIZE
from cohort.services.jobs.service import JobService


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

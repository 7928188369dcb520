"""gRPC servicer of `cohort.api.jobs.v1.JobService`. Proto <-> domain only."""

from __future__ import annotations

from collections.abc import AsyncIterator

import grpc.aio

from cohort.api.jobs.v1 import jobs_pb2, jobs_pb2_grpc
from cohort.platform.paging import DEFAULT_PAGE_SIZE
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

    async def CreateJob(
        self,
        request: jobs_pb2.CreateJobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.CreateJobRequest, jobs_pb2.CreateJobResponse],
    ) -> jobs_pb2.CreateJobResponse:
        return await self._service.create(request)

    async def GetJob(
        self,
        request: jobs_pb2.GetJobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.GetJobRequest, jobs_pb2.GetJobResponse],
    ) -> jobs_pb2.GetJobResponse:
        return jobs_pb2.GetJobResponse(job=await self._service.get(request.job_id))

    async def ListJobs(
        self,
        request: jobs_pb2.ListJobsRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.ListJobsRequest, jobs_pb2.ListJobsResponse],
    ) -> jobs_pb2.ListJobsResponse:
        jobs, next_token = await self._service.list(
            list(request.states), request.page_size or DEFAULT_PAGE_SIZE, request.page_token
        )
        return jobs_pb2.ListJobsResponse(jobs=jobs, next_page_token=next_token)

    async def WatchJob(
        self,
        request: jobs_pb2.WatchJobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.WatchJobRequest, jobs_pb2.WatchJobResponse],
    ) -> AsyncIterator[jobs_pb2.WatchJobResponse]:
        async for job, heartbeat in self._service.watch(request.job_id, request.after_revision):
            yield self._watch_response(job, heartbeat)

    def _watch_response(self, job: jobs_pb2.Job, heartbeat: bool) -> jobs_pb2.WatchJobResponse:
        last_job, last_heartbeat, response = self._last_watch
        if last_job is not job or last_heartbeat != heartbeat or response is None:
            response = jobs_pb2.WatchJobResponse(job=job, heartbeat=heartbeat)
            self._last_watch = (job, heartbeat, response)
        return response

    async def PauseJob(
        self,
        request: jobs_pb2.PauseJobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.PauseJobRequest, jobs_pb2.PauseJobResponse],
    ) -> jobs_pb2.PauseJobResponse:
        return jobs_pb2.PauseJobResponse(job=await self._service.pause(request))

    async def ResumeJob(
        self,
        request: jobs_pb2.ResumeJobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.ResumeJobRequest, jobs_pb2.ResumeJobResponse],
    ) -> jobs_pb2.ResumeJobResponse:
        return jobs_pb2.ResumeJobResponse(job=await self._service.resume(request))

    async def CancelJob(
        self,
        request: jobs_pb2.CancelJobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.CancelJobRequest, jobs_pb2.CancelJobResponse],
    ) -> jobs_pb2.CancelJobResponse:
        return jobs_pb2.CancelJobResponse(job=await self._service.cancel(request))

    async def RelaunchJob(
        self,
        request: jobs_pb2.RelaunchJobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.RelaunchJobRequest, jobs_pb2.RelaunchJobResponse],
    ) -> jobs_pb2.RelaunchJobResponse:
        return jobs_pb2.RelaunchJobResponse(job=await self._service.relaunch(request))

    async def EvaluateJob(
        self,
        request: jobs_pb2.EvaluateJobRequest,
        context: grpc.aio.ServicerContext[jobs_pb2.EvaluateJobRequest, jobs_pb2.EvaluateJobResponse],
    ) -> jobs_pb2.EvaluateJobResponse:
        return jobs_pb2.EvaluateJobResponse(evaluation=await self._service.evaluate(request))

"""Entry point of the jobs service: what it serves. `cohort serve jobs` runs it alone.

The job manager's runner (the per-iteration training work) is
`cohort.services.jobs.orchestration.TrainingRunner(context)`, unless the suite was started with
another (`ServiceContext.job_runner`: tests of the lifecycle run a light one).
"""

from __future__ import annotations

from cohort.api.jobs.v1 import jobs_pb2_grpc
from cohort.platform.rpc.server import ServiceRegistration
from cohort.services.jobs.orchestration import TrainingRunner
from cohort.services.jobs.service import JobService
from cohort.services.jobs.servicer import JobServiceServicer
from cohort.services.service_context import ServiceContext


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    make_runner = context.job_runner or TrainingRunner
    service = JobService(
        context.settings,
        context.database,
        make_runner(context),
        channels=lambda: context.channels,
        owned_only=context.runs_only_own_jobs,
    )

    async def start_job_manager() -> None:
        # Jobs start once every server of the process is bound (their runners call the others).
        await service.start(ready=lambda: hasattr(context, "channels"))

    return [
        ServiceRegistration(
            service_name="cohort.api.jobs.v1.JobService",
            servicer=JobServiceServicer(service),
            add_to_server=jobs_pb2_grpc.add_JobServiceServicer_to_server,
            on_start=start_job_manager,
            # Running jobs are handed back before the server stops, while the database is open.
            on_stop=service.stop,
        ),
    ]

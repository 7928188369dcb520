"""Entry point of the jobs service: what it serves. `cohort serve jobs` runs it alone.

The job manager's runner (the per-iteration training work) is
`cohort.services.jobs.orchestration.TrainingRunner(context)`. Without that module, `CreateJob` answers
FAILED_PRECONDITION saying orchestration is not available.

Test hook, for tests only: `COHORT_TEST_JOB_RUNNER=module:factory` makes the job manager run jobs with
`factory(context)` instead (a light runner that ticks progress, raises, or waits for cancel), so the
lifecycle can be tested, in-process or in a subprocess that a test kills, without real training.
"""

from __future__ import annotations

import importlib
import logging
import os

from cohort.api.identity.v1 import identity_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2_grpc
from cohort.rpc.server import ServiceRegistration
from cohort.services.context import ServiceContext
from cohort.services.jobs.runner import JobRunner
from cohort.services.jobs.service import JobService, RunnerUnavailable
from cohort.services.jobs.servicer import ApiKeyServicer, JobServiceServicer

log = logging.getLogger(__name__)

TEST_RUNNER_VARIABLE = "COHORT_TEST_JOB_RUNNER"
ORCHESTRATION_MODULE = "cohort.services.jobs.orchestration"


def job_runner(context: ServiceContext) -> JobRunner | RunnerUnavailable:
    hook = os.environ.get(TEST_RUNNER_VARIABLE, "").strip()
    if hook:
        module_name, _, factory = hook.partition(":")
        log.warning("%s=%s: jobs run with a test runner, not real training", TEST_RUNNER_VARIABLE, hook)
        return getattr(importlib.import_module(module_name), factory or "make_runner")(context)
    try:
        orchestration = importlib.import_module(ORCHESTRATION_MODULE)
    except ModuleNotFoundError as exc:
        if exc.name != ORCHESTRATION_MODULE:
            raise
        return RunnerUnavailable(f"{ORCHESTRATION_MODULE} is not installed in this build")
    return orchestration.TrainingRunner(context)


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    service = JobService(
        context.settings,
        context.database,
        job_runner(context),
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
        ServiceRegistration(
            service_name="cohort.api.identity.v1.ApiKeyService",
            servicer=ApiKeyServicer(context.api_keys),
            add_to_server=identity_pb2_grpc.add_ApiKeyServiceServicer_to_server,
        ),
    ]

"""Entry point of the jobs service: what it serves. `cohort serve jobs` runs it alone."""

from __future__ import annotations

from cohort.api.identity.v1 import identity_pb2_grpc
from cohort.api.jobs.v1 import jobs_pb2_grpc
from cohort.rpc.server import ServiceRegistration
from cohort.services.context import ServiceContext
from cohort.services.jobs.servicer import ApiKeyServicer, JobServiceServicer


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    return [
        ServiceRegistration(
            service_name="cohort.api.jobs.v1.JobService",
            servicer=JobServiceServicer(),
            add_to_server=jobs_pb2_grpc.add_JobServiceServicer_to_server,
        ),
        ServiceRegistration(
            service_name="cohort.api.identity.v1.ApiKeyService",
            servicer=ApiKeyServicer(context.api_keys),
            add_to_server=identity_pb2_grpc.add_ApiKeyServiceServicer_to_server,
        ),
    ]

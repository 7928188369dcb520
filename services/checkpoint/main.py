"""Entry point of the checkpoint service: what it serves. `cohort serve checkpoint` runs it alone.

Files go to `settings.effective_checkpoint_dir` (default `<data_dir>/checkpoints`). Start-up removes
what crashed saves left behind before the first RPC is served (every RPC waits for it).
"""

from __future__ import annotations

import asyncio

from cohort.api.checkpoint.v1 import checkpoint_pb2_grpc
from cohort.platform.rpc.server import ServiceRegistration
from cohort.services.checkpoint.blobstore import LocalBlobStore
from cohort.services.checkpoint.service import CheckpointService
from cohort.services.checkpoint.servicer import CheckpointServiceServicer
from cohort.services.service_context import ServiceContext


def registrations(context: ServiceContext) -> list[ServiceRegistration]:
    settings = context.settings
    service = CheckpointService.for_message_limit(
        context.database, LocalBlobStore(settings.effective_checkpoint_dir), settings.max_message_bytes
    )
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass  # no loop yet: recovery starts with the first RPC
    else:
        service.start_recovery()
    return [
        ServiceRegistration(
            service_name="cohort.api.checkpoint.v1.CheckpointService",
            servicer=CheckpointServiceServicer(service),
            add_to_server=checkpoint_pb2_grpc.add_CheckpointServiceServicer_to_server,
        )
    ]

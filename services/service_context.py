"""What every service of a process shares: settings, the database, identity, channels to the others."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from cohort.platform.config import Settings
from cohort.platform.context import Authenticator
from cohort.platform.rpc.client import ChannelPool
from cohort.platform.storage.engine import Database
from cohort.services.identity.service import ApiKeyService
from cohort.services.jobs.runner import JobRunner


@dataclass
class ServiceContext:
    settings: Settings
    database: Database
    api_keys: ApiKeyService
    authenticator: Authenticator | None
    """What every server of the process authenticates calls with; None when authentication is off."""
    runs_only_own_jobs: bool = False
    """A CLI command's suite: its job manager runs only the jobs created through it."""
    job_runner: Callable[[ServiceContext], JobRunner] | None = None
    """Makes what runs the job manager's jobs; None: real training (`TrainingRunner`). Tests of the job
    manager itself give a light runner that only ticks progress, raises, or waits for cancel."""
    channels: ChannelPool = field(init=False)
    """Set once every server of the process is bound, so in-process peers are reached on their real ports."""

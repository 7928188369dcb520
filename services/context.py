"""What every service of a process shares: settings, the database, identity, channels to the others."""

from __future__ import annotations

from dataclasses import dataclass, field

from cohort.config import Settings
from cohort.identity import ApiKeyAuthenticator, ApiKeyStore
from cohort.rpc.client import ChannelPool
from cohort.storage.engine import Database


@dataclass
class ServiceContext:
    settings: Settings
    database: Database
    api_keys: ApiKeyStore
    authenticator: ApiKeyAuthenticator | None
    runs_only_own_jobs: bool = False
    """A CLI command's suite: its job manager runs only the jobs created through it."""
    channels: ChannelPool = field(init=False)
    """Set once every server of the process is bound, so in-process peers are reached on their real ports."""

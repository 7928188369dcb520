"""`cohort serve` whose job manager runs jobs with a test runner instead of real training, for tests
and benches that need the job manager in a process of its own (to kill it, or to measure it apart
from the load it answers):

    python tests/serve_with_test_runner.py MODULE:FACTORY [SERVICE...]

`FACTORY(context)` makes the runner (`ServiceContext.job_runner`); MODULE is imported through
PYTHONPATH. The SERVICE arguments are `cohort serve`'s.
"""

from __future__ import annotations

import functools
import importlib
import logging
import sys

import cohort.cli.quiet_grpc  # noqa: F401 - before anything loads gRPC, as the cohort command does


def main() -> None:
    hook, services = sys.argv[1], sys.argv[2:]
    module_name, _, factory_name = hook.partition(":")
    factory = getattr(importlib.import_module(module_name), factory_name)

    # Before the CLI is imported, so the CLI starts its suite with the runner however it imports this.
    from cohort.services import suite

    suite.start_suite = functools.partial(suite.start_suite, job_runner=factory)
    from cohort.cli import main as cohort

    logging.getLogger(__name__).warning("test runner %s: no real training in this process", hook)
    cohort(["serve", *services], prog_name="cohort")


if __name__ == "__main__":
    main()

"""Imported first by the `cohort` command: gRPC core reads `GRPC_VERBOSITY` once, when it is loaded,
and at its default it logs every GOAWAY of a graceful shutdown at INFO. A command line wants errors
only; an explicit `GRPC_VERBOSITY` is kept."""

import os

os.environ.setdefault("GRPC_VERBOSITY", "ERROR")

"""The full training state of a job as checkpoint files, and back.

`SaveCheckpointRequest.files` is opaque named bytes; this is the layout the job manager writes and
reads, so a resumed job continues exactly where it stopped:

- `policy.npz`: the policy parameters, one array per name (NumPy `.npz`, no pickles);
- `optimizer.npz`: the optimizer moments, `<moment>/<parameter>` (for Adam `m/...` and `v/...`);
- `state.json`: the optimizer step, the RNG states (JSON, e.g. `numpy.random.Generator.bit_generator.state`
  or `random.getstate()` as lists), the data cursor, reward statistics, the reference policy's hash
  and anything extra the caller adds.

Iteration, policy id and version, metrics and cumulative cost travel as fields of the request itself.
"""

from __future__ import annotations

import io
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from cohort.api.checkpoint.v1 import checkpoint_pb2 as pb

POLICY_FILE = "policy.npz"
OPTIMIZER_FILE = "optimizer.npz"
STATE_FILE = "state.json"
STATE_FORMAT = "cohort.training-state.v1"


@dataclass
class TrainingState:
    policy_parameters: dict[str, np.ndarray]
    optimizer_moments: dict[str, dict[str, np.ndarray]] = field(default_factory=dict)
    """Moment name (`m`, `v`) to arrays by parameter name."""
    optimizer_step: int = 0
    rng_states: dict[str, Any] = field(default_factory=dict)
    data_cursor: dict[str, Any] = field(default_factory=dict)
    reward_statistics: dict[str, float] = field(default_factory=dict)
    reference_policy_sha256: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def _npz(arrays: Mapping[str, np.ndarray]) -> bytes:
    buffer = io.BytesIO()
    np.savez(buffer, **{name: np.asarray(value) for name, value in arrays.items()})
    return buffer.getvalue()


def _arrays(content: bytes) -> dict[str, np.ndarray]:
    with np.load(io.BytesIO(content), allow_pickle=False) as archive:
        return {name: archive[name] for name in archive.files}


def encode_training_state(state: TrainingState) -> list[pb.CheckpointFile]:
    """The files of a checkpoint holding `state` (CPU work: call from a worker thread for big policies)."""
    moments = {
        f"{moment}/{name}": value
        for moment, arrays in state.optimizer_moments.items()
        for name, value in arrays.items()
    }
    document = {
        "format": STATE_FORMAT,
        "optimizer_step": state.optimizer_step,
        "rng_states": state.rng_states,
        "data_cursor": state.data_cursor,
        "reward_statistics": state.reward_statistics,
        "reference_policy_sha256": state.reference_policy_sha256,
        "extra": state.extra,
    }
    return [
        pb.CheckpointFile(name=POLICY_FILE, content=_npz(state.policy_parameters)),
        pb.CheckpointFile(name=OPTIMIZER_FILE, content=_npz(moments)),
        pb.CheckpointFile(
            name=STATE_FILE, content=json.dumps(document, sort_keys=True, allow_nan=False).encode()
        ),
    ]


def decode_training_state(files: Iterable[pb.CheckpointFile]) -> TrainingState:
    """The state `encode_training_state` wrote; `ValueError` when a file is missing or malformed."""
    by_name = {file.name: file.content for file in files}
    missing = [name for name in (POLICY_FILE, OPTIMIZER_FILE, STATE_FILE) if name not in by_name]
    if missing:
        raise ValueError(f"not a training-state checkpoint: missing {', '.join(missing)}")
    document = json.loads(by_name[STATE_FILE])
    if document.get("format") != STATE_FORMAT:
        raise ValueError(f"{STATE_FILE}: unknown format {document.get('format')!r}")
    moments: dict[str, dict[str, np.ndarray]] = {}
    for key, value in _arrays(by_name[OPTIMIZER_FILE]).items():
        moment, _, name = key.partition("/")
        moments.setdefault(moment, {})[name] = value
    return TrainingState(
        policy_parameters=_arrays(by_name[POLICY_FILE]),
        optimizer_moments=moments,
        optimizer_step=document["optimizer_step"],
        rng_states=document["rng_states"],
        data_cursor=document["data_cursor"],
        reward_statistics=document["reward_statistics"],
        reference_policy_sha256=document["reference_policy_sha256"],
        extra=document["extra"],
    )

"""A Node.js agent (`tests/agents/node`, @grpc/grpc-js) collected by `CollectGroup`, deciding via `Decide`.

Runs when `node` is installed; `npm ci` installs the pinned dependencies into that directory when
node_modules is missing (the npm registry must then be reachable; a failed install fails the test).
"""

from __future__ import annotations

import asyncio
import json
import shutil
import uuid
from pathlib import Path

import numpy as np
import pytest

from cohort.api.collector.v1 import collector_pb2 as cpb
from cohort.api.collector.v1 import collector_pb2_grpc
from cohort.api.trainer.v1 import trainer_pb2, trainer_pb2_grpc
from cohort.api.trajectory.v1 import trajectory_pb2 as tpb
from cohort.platform.config import Settings
from cohort.services.suite import start_suite

AGENT_DIR = Path(__file__).resolve().parent.parent / "agents" / "node"
COMPONENTS = ["collector", "jobs", "trainer"]

pytestmark = pytest.mark.skipif(
    shutil.which("node") is None, reason="node is not installed: no Node.js agent to run"
)


async def _npm_install() -> None:
    if (AGENT_DIR / "node_modules" / "@grpc" / "grpc-js").is_dir():
        return
    npm = shutil.which("npm")
    assert npm is not None, "node is installed but npm is not: cannot install the agent's dependencies"
    process = await asyncio.create_subprocess_exec(
        npm,
        "ci",
        "--no-audit",
        "--no-fund",
        cwd=AGENT_DIR,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    output, _ = await asyncio.wait_for(process.communicate(), 300)
    assert process.returncode == 0, (
        f"npm ci failed in {AGENT_DIR}:\n{output.decode(errors='replace')[-4000:]}"
    )


@pytest.fixture
async def node_agent():
    """(address, lines printed by the agent) of a running `node agent.js`."""
    await _npm_install()
    process = await asyncio.create_subprocess_exec(
        shutil.which("node"), "agent.js", "--port", "0", cwd=AGENT_DIR, stdout=asyncio.subprocess.PIPE
    )
    lines: list[str] = []
    try:
        first = (await asyncio.wait_for(process.stdout.readline(), 30)).decode().strip()
        assert first.startswith("LISTENING "), first
        address = f"127.0.0.1:{first.split()[1]}"

        async def read() -> None:
            async for line in process.stdout:
                lines.append(line.decode().strip())

        reader = asyncio.create_task(read())
        yield address, lines
        reader.cancel()
    finally:
        if process.returncode is None:
            process.terminate()
            await process.wait()


@pytest.fixture
async def suite(tmp_path):
    suite = await start_suite(
        Settings(data_dir=tmp_path / "var", auth_cache_seconds=0.0), COMPONENTS, ephemeral_ports=True
    )
    yield suite
    await suite.stop(0)


def request(runtime: cpb.RuntimeSpec, **fields) -> cpb.CollectGroupRequest:
    mode = fields.pop("mode", "good")
    query = cpb.Query(
        query_id=f"q-{uuid.uuid4().hex[:8]}", text="pick tools", payload_json=json.dumps({"mode": mode})
    )
    return cpb.CollectGroupRequest(runtime=runtime, query=query, **fields)


async def test_the_node_agent_decides_through_decide_like_a_local_python_agent(suite, node_agent):
    address, lines = node_agent
    trainer = trainer_pb2_grpc.TrainerServiceStub(suite.context.channels.channel("trainer"))
    weights = np.random.default_rng(9).normal(0, 2.0, 64).tolist()
    await trainer.CreatePolicy(
        trainer_pb2.CreatePolicyRequest(
            policy_id="node-policy",
            heads=[trainer_pb2.DecisionHead(name="next_tool", feature_buckets=64)],
            initial_parameters=[trainer_pb2.HeadParameters(head="next_tool", weights=weights)],
        ),
        timeout=10,
    )
    policy = tpb.PolicyRef(policy_id="node-policy")
    stub = collector_pb2_grpc.CollectorServiceStub(suite.context.channels.channel("collector"))
    node = cpb.RuntimeSpec(grpc=cpb.GrpcRuntime(address=address))
    remote = [
        r async for r in stub.CollectGroup(request(node, group_size=6, seed=300, policy=policy), timeout=60)
    ]
    python = cpb.RuntimeSpec(python=cpb.PythonRuntime(entry_point="agents.python_agents:ok_agent"))
    local = [
        r async for r in stub.CollectGroup(request(python, group_size=6, seed=300, policy=policy), timeout=60)
    ]
    local_decisions = {r.rollout_index: r.trajectory.decisions for r in local}
    assert len(remote) == 6
    for response in remote:
        t = response.trajectory
        assert t.termination_reason == tpb.TERMINATION_REASON_COMPLETED, t.termination_detail
        assert t.agent.name == "node-agent" and t.provider == "node"
        assert t.final_result.startswith(f"seed={300 + response.rollout_index} ")
        assert [s.step_number for s in t.agent_steps] == [1, 2]
        assert t.agent_steps[1].tool_results[0].result == "result 2"
        assert t.policy == tpb.PolicyRef(policy_id="node-policy", version=1)
        mine = local_decisions[response.rollout_index]
        assert [d.chosen for d in t.decisions] == [d.chosen for d in mine]
        assert [d.log_prob for d in t.decisions] == pytest.approx([d.log_prob for d in mine], abs=1e-12)

    # Cancelling the CollectGroup call cancels the agent's Run calls.
    call = stub.CollectGroup(request(node, group_size=2, mode="sleep"), timeout=60)
    reader = asyncio.ensure_future(call.read())
    await asyncio.sleep(0.5)
    call.cancel()
    with pytest.raises(asyncio.CancelledError):
        await reader
    for _ in range(250):
        if sum(line.startswith("CANCELLED ") for line in lines) == 2:
            break
        await asyncio.sleep(0.02)
    assert sum(line.startswith("CANCELLED ") for line in lines) == 2, lines

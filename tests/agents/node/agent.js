// A Node.js agent for Cohort's collector: implements cohort.api.agentruntime.v1.AgentRuntimeService.
//
// Per rollout it streams `started`, then for each of two steps asks TrainerService.Decide (at the
// RunRequest's trainer_address, with its api_key, seeded seed * 1000 + n for the n-th decision) which
// tool to use, streams the decision and the step, and ends with `finished`. The protos are loaded from
// the repository's protos/ directory, so the contract is the one the Python services are built from.
//
//   node agent.js [--port 0]      prints "LISTENING <port>" once serving
//
// Payload `{"mode": "sleep"}` makes a run wait until the collector cancels it, then print
// "CANCELLED <rollout_id>" (how a test sees that cancellation reached the agent).
"use strict";

const path = require("path");
const grpc = require("@grpc/grpc-js");
const protoLoader = require("@grpc/proto-loader");

const PROTOS = path.resolve(__dirname, "..", "..", "..", "protos");
const TOOLS = ["search", "calculator", "answer"];
const STEPS = 2;
const DECISIONS_PER_SEED = 1000n;

const definition = protoLoader.loadSync(
  ["cohort/api/agentruntime/v1/agent_runtime.proto", "cohort/api/trainer/v1/trainer.proto"],
  { includeDirs: [PROTOS], keepCase: true, longs: String, enums: String, defaults: false, oneofs: true }
);
const api = grpc.loadPackageDefinition(definition).cohort.api;

const trainers = new Map();
function trainerAt(address) {
  if (!trainers.has(address)) {
    trainers.set(address, new api.trainer.v1.TrainerService(address, grpc.credentials.createInsecure()));
  }
  return trainers.get(address);
}

function decide(request, step) {
  const metadata = new grpc.Metadata();
  if (request.api_key) metadata.add("authorization", `Bearer ${request.api_key}`);
  const seed = BigInt(request.seed || "0") * DECISIONS_PER_SEED + BigInt(step - 1);
  const decideRequest = {
    policy_id: request.policy ? request.policy.policy_id : "",
    version: request.policy ? request.policy.version : "0",
    head: "next_tool",
    features: { step: step },
    options: TOOLS,
    mode: request.greedy ? "DECISION_MODE_GREEDY" : "DECISION_MODE_SAMPLE",
    seed: seed.toString(),
    exploration: request.exploration || 0,
  };
  const deadline = new Date(Date.now() + 10000);
  return new Promise((resolve, reject) => {
    trainerAt(request.trainer_address).Decide(decideRequest, metadata, { deadline }, (error, response) =>
      error ? reject(error) : resolve(response.decision)
    );
  });
}

function now() {
  const ms = Date.now();
  return { seconds: String(Math.floor(ms / 1000)), nanos: (ms % 1000) * 1e6 };
}

async function run(call) {
  const request = call.request;
  const payload = request.payload_json ? JSON.parse(request.payload_json) : {};
  let cancelled = false;
  call.on("cancelled", () => {
    cancelled = true;
  });
  call.write({
    event: { started: { provider: "node", model: "toolbench-sim", agent: { name: "node-agent", version: "1" } } },
  });
  if (payload.mode === "sleep") {
    while (!cancelled) await new Promise((resolve) => setTimeout(resolve, 10));
    console.log(`CANCELLED ${request.rollout_id}`);
    return;
  }
  const chosen = [];
  for (let step = 1; step <= STEPS && !cancelled; step++) {
    const decision = await decide(request, step);
    chosen.push(decision.chosen);
    call.write({ event: { decision } });
    const callId = `call-${step}`;
    call.write({
      event: {
        step: {
          step_number: step,
          timestamp: now(),
          state: "calling_tool",
          tool_calls: [{ call_id: callId, name: decision.chosen, arguments_json: JSON.stringify({ step }) }],
          tool_results: [{ call_id: callId, success: true, result: `result ${step}` }],
          usage: { input_tokens: "12", output_tokens: "4" },
        },
      },
    });
  }
  if (cancelled) return;
  call.write({
    event: {
      finished: {
        success: true,
        final_result: `seed=${request.seed || 0} tools=${chosen.join(",")}`,
        termination_reason: "TERMINATION_REASON_COMPLETED",
      },
    },
  });
  call.end();
}

function main() {
  const portIndex = process.argv.indexOf("--port");
  const port = portIndex >= 0 ? process.argv[portIndex + 1] : "0";
  const server = new grpc.Server();
  server.addService(api.agentruntime.v1.AgentRuntimeService.service, {
    Run: (call) => {
      run(call).catch((error) => {
        if (!call.cancelled) call.destroy({ code: grpc.status.INTERNAL, details: String(error.message || error) });
      });
    },
  });
  server.bindAsync(`127.0.0.1:${port}`, grpc.ServerCredentials.createInsecure(), (error, bound) => {
    if (error) {
      console.error(error);
      process.exit(1);
    }
    console.log(`LISTENING ${bound}`);
  });
  const stop = () => server.tryShutdown(() => process.exit(0));
  process.on("SIGTERM", stop);
  process.on("SIGINT", stop);
}

main();

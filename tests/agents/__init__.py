"""Test agents: Python entry points, a Python gRPC `AgentRuntimeService`, and a Node.js one (node/)."""

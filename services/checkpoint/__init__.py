"""The checkpoint service. Durable, verified snapshots of training state, retention and restore."""

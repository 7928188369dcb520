"""The reward service. Turns trajectories into rewards, group statistics and group-relative advantages."""

"""Privacy: DP-SGD inside the round, accounting, network DP, secure aggregation."""

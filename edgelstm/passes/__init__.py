"""Graph-to-graph passes: they take and give IR graphs and never touch files."""

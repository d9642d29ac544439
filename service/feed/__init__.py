"""The replica's life: snapshot files, event sources, checkpoints, readiness."""

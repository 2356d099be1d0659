"""Episode collection, replay, schedules and the training loop."""

"""Running one run: model.fit and its callbacks, the run folder, stopping and resuming."""

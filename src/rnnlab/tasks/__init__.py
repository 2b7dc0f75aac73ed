"""The applications: each binds its data, model, training step, metrics and inference to the
training engine (:mod:`rnnlab.training`)."""

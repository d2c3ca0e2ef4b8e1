"""Training methods: each turns a batch into ``(loss_sum, metrics)`` and prepares its data."""

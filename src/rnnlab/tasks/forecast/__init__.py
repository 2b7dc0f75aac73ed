"""Time-series forecasting on the training engine."""

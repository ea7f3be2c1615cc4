"""Training helpers: offline data sets, a plain training loop, the demo."""

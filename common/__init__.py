"""Shared pieces used by at least two examples: data readers, EMA, logging, checkpoints,
distributed helpers and CPU math settings.  Nothing here imports paddle at package import
time, so ``common.cpu_env`` can run before paddle loads."""

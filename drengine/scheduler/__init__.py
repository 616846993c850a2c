"""Running policies: job history, the one-shot runner and the daemon."""

"""Monitoring: the real-vs-synthetic gate (stage `gate`), serving drift and alerting."""

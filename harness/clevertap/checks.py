"""Payload checks (CT1xx-CT4xx), registered with harness.checks. Being written."""

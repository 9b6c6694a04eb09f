"""The web dashboard of the live world, served by the fake CleverTap at ``/``.

:func:`mount_dashboard` adds it to a :class:`~harness.clevertap.app.CleverTapApp`
(:func:`~harness.clevertap.app.create_app` does). See ``docs/dashboard.md``.
"""

from harness.dashboard.routes import mount_dashboard

__all__ = ["mount_dashboard"]

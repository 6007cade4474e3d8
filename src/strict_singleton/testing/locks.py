"""``lock_from_url``: an alias of :func:`strict_singleton.lock_backends.from_url`, kept for
existing callers. New code: ``from strict_singleton.lock_backends import from_url``."""

from strict_singleton.lock_backends import from_url as lock_from_url

__all__ = ["lock_from_url"]

"""Store errors: what a caller can act on, independent of the backend that raised it."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of every error the store raises on purpose."""


class NotFound(StoreError):
    """The experiment, revision or arm named does not exist."""


class AlreadyExists(StoreError):
    """A unique name is taken: (namespace, experiment name), an arm id, a revision number."""


class Conflict(StoreError):
    """The write would break an invariant: a second apply of one version, a broken version
    chain, feedback rows already applied."""


class StaleFence(Conflict):
    """A learner wrote with a fencing token older than the current one: it lost its lease."""


class Unavailable(StoreError):
    """The database cannot be reached or is locked past the busy timeout; retrying may help."""


class StateFormatError(StoreError):
    """A serialized state is corrupt, tampered with, or not what the caller expected (another
    family or revision, an unknown format version)."""

"""Errors raised while turning a notification into a callback call.

Every error names what was wrong (channel, model, history id) so that the log line alone is enough
to find the notification again.
"""

from __future__ import annotations


class PgpubsubSimplehistoryError(Exception):
    """Base class of every error raised by this package."""


class InvalidPayload(PgpubsubSimplehistoryError):
    """The notification payload is not one written by a history trigger of this package."""


class UnknownModel(PgpubsubSimplehistoryError):
    """The payload names a model (or history model) that this project does not define."""


class MissingHistoryRecord(PgpubsubSimplehistoryError):
    """The historical record a notification points at no longer exists.

    django-simple-history's ``clean_old_history``, ``clean_duplicate_history`` and
    ``cascade_delete_history=True`` delete history rows; a notification still pending for one of
    them cannot be resolved.
    """


class ChannelConfigurationError(PgpubsubSimplehistoryError):
    """A channel or subscription is declared in a way that cannot work."""

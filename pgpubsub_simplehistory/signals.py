"""Django signals sent as notifications of history channels are settled: wire metrics here.

Every signal is sent with ``sender`` = the channel class and these keyword arguments:

``channel``
    Dotted name of the channel (``str``).
``model``
    ``app_label.ModelName`` of the changed model as notified (``str``).
``history_id``
    Primary key of the historical record, as notified (``str``).
``history_type``
    ``'+'``, ``'~'`` or ``'-'``; an empty string when the payload could not be read.
``notification_id``
    Primary key of the stored notification (``None`` on non-lockable channels).
``attempt``
    Which attempt this was, from 1.
``duration``
    Seconds spent resolving the record and running the listeners (``float``).
``error``
    The exception (``None`` for :data:`notification_processed`).

Signals are sent after the transaction that settled the notification has committed, so a
receiver never counts work that was rolled back. They are sent with ``send_robust``: a failing
receiver is logged (logger ``django.dispatch``) and cannot disturb the listener.
"""

from __future__ import annotations

from django.dispatch import Signal

#: The listeners ran and the notification is done.
notification_processed = Signal()
#: A listener raised; its changes were rolled back and the notification will be retried.
#: Non-lockable channels (no retry) also send it for every failure.
notification_failed = Signal()
#: The notification was parked: it could not be resolved, or its attempts are exhausted.
notification_parked = Signal()

__all__ = ["notification_failed", "notification_parked", "notification_processed"]

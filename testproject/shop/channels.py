import os
from dataclasses import dataclass

from pgpubsub_simplehistory import HistoryTriggerChannel

from .models import Customer, Order, Product, Shipment


@dataclass
class OrderChannel(HistoryTriggerChannel):
    model = Order
    lock_notifications = True
    # Overridable from the environment so that fault tests can run listener subprocesses fast.
    max_attempts = int(os.environ.get("SHOP_MAX_ATTEMPTS", "5"))
    retry_base_delay = float(os.environ.get("SHOP_RETRY_BASE_DELAY", "1.0"))
    retry_max_delay = float(os.environ.get("SHOP_RETRY_MAX_DELAY", "300"))


@dataclass
class CustomerChannel(HistoryTriggerChannel):
    """Not lockable: each listening process gets each notification while connected."""

    model = Customer
    history_types = "+~"  # inserts and updates only: its trigger skips deletes


@dataclass
class ShipmentChannel(HistoryTriggerChannel):
    model = Shipment
    history_types = "+~"  # inserts and updates only: its trigger skips deletes
    lock_notifications = True


@dataclass
class ProductChannel(HistoryTriggerChannel):
    model = Product
    lock_notifications = True

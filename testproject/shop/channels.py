from dataclasses import dataclass

from pgpubsub_simplehistory import HistoryTriggerChannel

from .models import Customer, Order, Product, Shipment


@dataclass
class OrderChannel(HistoryTriggerChannel):
    model = Order
    lock_notifications = True


@dataclass
class CustomerChannel(HistoryTriggerChannel):
    """Not lockable: each listening process gets each notification while connected."""

    model = Customer


@dataclass
class ShipmentChannel(HistoryTriggerChannel):
    model = Shipment
    lock_notifications = True


@dataclass
class ProductChannel(HistoryTriggerChannel):
    model = Product
    lock_notifications = True

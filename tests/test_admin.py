"""The Django admin of stored notifications, through Django's test client on real Postgres."""

from __future__ import annotations

import datetime
from typing import Any

import pytest
from django.contrib.auth.models import Permission, User
from django.test import Client
from django.utils import timezone

from pgpubsub_simplehistory.models import Notification
from testproject.shop.channels import OrderChannel
from testproject.shop.factories import OrderFactory
from testproject.shop.models import ReceivedEvent

pytestmark = pytest.mark.django_db

CHANGELIST = "/admin/pgpubsub_simplehistory/notification/"


def change_url(notification: Notification) -> str:
    return f"{CHANGELIST}{notification.pk}/change/"


def order_notifications() -> list[Notification]:
    return list(Notification.objects.filter(model="shop.Order").order_by("pk"))


def staff(*codenames: str) -> Client:
    user = User.objects.create_user(f"staff-{len(codenames)}-{'-'.join(codenames)}"[:150])
    user.is_staff = True
    user.save()
    user.user_permissions.set(
        Permission.objects.filter(
            content_type__app_label="pgpubsub_simplehistory", codename__in=codenames
        )
    )
    client = Client()
    client.force_login(user)
    return client


def post_action(client: Client, action: str, rows: list[Notification], **extra: str) -> Any:
    data = {"action": action, "_selected_action": [str(n.pk) for n in rows], **extra}
    return client.post(CHANGELIST, data)


@pytest.fixture
def parked_and_pending() -> tuple[Notification, Notification]:
    bad, good = OrderFactory(status="explode"), OrderFactory(status="fine")
    parked = Notification.objects.get(model="shop.Order", object_id=str(bad.pk))
    parked.state, parked.attempts, parked.last_error = "parked", 5, "RuntimeError: refuses"
    parked.save()
    pending = Notification.objects.get(model="shop.Order", object_id=str(good.pk))
    return parked, pending


def test_changelist_lists_and_filters_by_state_channel_model_and_age(
    admin_client, parked_and_pending
):
    parked, pending = parked_and_pending
    Notification.objects.filter(pk=parked.pk).update(
        created_at=timezone.now() - datetime.timedelta(hours=2)
    )

    def ids(query: str) -> set[int]:
        response = admin_client.get(CHANGELIST + query)
        assert response.status_code == 200
        return {n.pk for n in response.context["cl"].result_list}

    everything = ids("")
    assert {parked.pk, pending.pk} <= everything
    assert ids("?state=parked") == {parked.pk}
    assert pending.pk in ids("?state=pending") and parked.pk not in ids("?state=pending")
    assert ids(f"?channel={OrderChannel.listen_safe_name()}") == {
        n.pk for n in order_notifications()
    }
    assert ids("?model=shop.Order") == {n.pk for n in order_notifications()}
    assert ids("?age=1h") == {parked.pk}
    page = admin_client.get(CHANGELIST).content.decode()
    assert OrderChannel.name() in page  # the channel's dotted name, not its listen name
    assert "RuntimeError: refuses" in page


def test_detail_shows_record_resolved_object_and_diff_against_previous(admin_client):
    order = OrderFactory(status="new")
    order.status = "paid"
    order.save()
    update = Notification.objects.get(model="shop.Order", history_type="~")
    order.status = "shipped"
    order.save()  # the live object has moved on since the notified change
    response = admin_client.get(change_url(update))
    assert response.status_code == 200
    inspection = response.context["inspection"]
    assert inspection.error is None and inspection.has_previous and inspection.exists_today
    status = next(f for f in inspection.fields if f.name == "status")
    assert (status.previous, status.record, status.current, status.changed) == (
        "new",
        "paid",
        "shipped",
        True,
    )
    assert not next(f for f in inspection.fields if f.name == "customer_id").changed
    html = response.content.decode()
    assert 'id="psh-diff"' in html and "status <strong>(changed)</strong>" in html
    assert dict(inspection.history)["history_type"] == "~"
    assert 'name="_save"' not in html  # read-only


def test_detail_of_unresolvable_notification_names_the_problem(admin_client):
    order = OrderFactory(status="new")
    order.history.all().delete()
    [notification] = order_notifications()
    response = admin_client.get(change_url(notification))
    assert response.status_code == 200
    assert "Cannot resolve this notification" in response.content.decode()
    assert "no longer exists" in response.context["inspection"].error


def test_retry_action_makes_parked_pending_and_leaves_pending_alone(
    admin_client, parked_and_pending
):
    parked, pending = parked_and_pending
    response = post_action(admin_client, "retry", [parked, pending])
    assert response.status_code == 302
    parked.refresh_from_db()
    assert (parked.state, parked.attempts) == ("pending", 0)
    messages = [str(m) for m in admin_client.get(CHANGELIST).context["messages"]]
    assert any("1 parked notification made pending. 1 not parked" in m for m in messages)


def test_replay_action_runs_the_listeners_again_and_keeps_the_notification(
    admin_client, parked_and_pending
):
    _, pending = parked_and_pending
    response = post_action(admin_client, "replay", [pending])
    assert response.status_code == 302
    [event] = ReceivedEvent.objects.filter(listener="on_order_saved")
    assert event.extra["replayed"] is True and event.new["status"] == "fine"
    assert Notification.objects.filter(pk=pending.pk, state="pending").exists()


def test_replay_action_reports_a_failing_listener(admin_client, parked_and_pending):
    parked, _ = parked_and_pending
    post_action(admin_client, "replay", [parked])
    messages = [str(m) for m in admin_client.get(CHANGELIST).context["messages"]]
    assert any(
        f"Replay of notification {parked.pk}" in m and "refuses order" in m for m in messages
    )
    assert not ReceivedEvent.objects.exists()


def test_purge_asks_for_confirmation_then_deletes_parked_only(admin_client, parked_and_pending):
    parked, pending = parked_and_pending
    response = post_action(admin_client, "purge", [parked, pending])
    assert response.status_code == 200
    html = response.content.decode()
    assert "Delete 1 parked notification?" in html and "1 selected notification not parked" in html
    assert Notification.objects.filter(pk=parked.pk).exists()  # nothing deleted yet

    response = post_action(admin_client, "purge", [parked, pending], post="yes")
    assert response.status_code == 302
    assert not Notification.objects.filter(pk=parked.pk).exists()
    assert Notification.objects.filter(pk=pending.pk).exists()


def test_staff_without_permission_gets_403(parked_and_pending):
    parked, _ = parked_and_pending
    client = staff()
    assert client.get(CHANGELIST).status_code == 403
    assert client.get(change_url(parked)).status_code == 403
    assert post_action(client, "retry", [parked]).status_code == 403
    parked.refresh_from_db()
    assert parked.state == "parked"


def test_view_permission_sees_but_cannot_act(parked_and_pending):
    parked, pending = parked_and_pending
    client = staff("view_notification")
    assert client.get(CHANGELIST).status_code == 200
    assert client.get(change_url(pending)).status_code == 200
    for action in ("retry", "replay", "purge"):
        post_action(client, action, [parked], post="yes")
    parked.refresh_from_db()
    assert parked.state == "parked" and not ReceivedEvent.objects.exists()
    assert client.get(f"{CHANGELIST}add/").status_code == 403


def test_each_action_needs_its_own_permission(parked_and_pending):
    parked, pending = parked_and_pending
    change_only = staff("view_notification", "change_notification")
    post_action(change_only, "replay", [pending])
    post_action(change_only, "purge", [parked], post="yes")
    assert not ReceivedEvent.objects.exists()
    assert Notification.objects.filter(pk=parked.pk).exists()
    post_action(change_only, "retry", [parked])
    parked.refresh_from_db()
    assert parked.state == "pending"

    replayer = staff("view_notification", "replay_notification")
    post_action(replayer, "replay", [pending])
    assert ReceivedEvent.objects.filter(listener="on_order_saved").count() == 1

    Notification.objects.filter(pk=parked.pk).update(state="parked")
    deleter = staff("view_notification", "delete_notification")
    post_action(deleter, "purge", [parked], post="yes")
    assert not Notification.objects.filter(pk=parked.pk).exists()
    # A pending notification cannot be deleted from its own page either.
    assert deleter.get(f"{CHANGELIST}{pending.pk}/delete/").status_code == 403

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
    # The channel's class path (wrapping at its dots), not its listen name.
    assert OrderChannel.name().replace(".", ".<wbr>") in page
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
    assert dict(inspection.history)["history_type"] == "update (~)"
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


# Issue 15: the operator's view.


def test_detail_shows_the_tracked_objects_values_only_with_its_view_permission():
    victim = User.objects.create_user("victim", "victim@example.com", "s3cret-pass-phrase")
    [notification] = Notification.objects.filter(model="auth.User", object_id=str(victim.pk))
    reader = User.objects.create_user("reader", is_staff=True)
    reader.user_permissions.set(Permission.objects.filter(codename="view_notification"))
    client = Client()
    client.force_login(reader)
    assert client.get("/admin/auth/user/").status_code == 403

    response = client.get(change_url(notification))
    assert response.status_code == 200
    html = response.content.decode()
    assert victim.password not in html and victim.password.split("$")[-1] not in html
    assert "victim@example.com" not in html and "victim" not in html  # nor the username
    assert 'id="psh-values-hidden"' in html and "<code>auth.User</code>" in html
    history = dict(response.context["inspection"].history)
    assert set(history) == {"history_id", "history_type", "history_date", "object_id"}
    assert history["object_id"] == str(victim.pk) and not response.context["inspection"].fields
    list_html = client.get(CHANGELIST).content.decode()
    assert "victim@example.com" not in list_html and victim.password not in list_html

    reader.user_permissions.add(Permission.objects.get(codename="view_user"))
    client.force_login(User.objects.get(pk=reader.pk))  # a fresh permission cache
    html = client.get(change_url(notification)).content.decode()
    assert "victim@example.com" in html and 'id="psh-values-hidden"' not in html


def test_channel_filter_has_one_entry_per_channel_and_the_list_few_queries(
    admin_client, django_assert_max_num_queries
):
    for _ in range(5):
        OrderFactory(status="fine")
    stored = set(Notification.objects.order_by().values_list("listen_name", flat=True))
    with django_assert_max_num_queries(8):
        response = admin_client.get(CHANGELIST)
    [channel] = [f for f in response.context["cl"].filter_specs if f.title == "channel"]
    names = [value for value, _ in channel.lookup_choices]
    assert sorted(names) == sorted(stored)  # 5 orders: still one OrderChannel entry
    html = response.content.decode()
    assert html.count(f"?channel={OrderChannel.listen_safe_name()}") == 1


def test_the_list_counts_up_to_a_cap(admin_client, monkeypatch):
    from pgpubsub_simplehistory import admin as psh_admin

    monkeypatch.setattr(psh_admin, "COUNT_CAP", 3)
    for _ in range(5):
        OrderFactory(status="fine")
    html = admin_client.get(CHANGELIST).content.decode()
    assert "more than 3 notifications" in html
    assert "Select all matching (more than 3)" in html
    html = admin_client.get(CHANGELIST + "?model=shop.Order&age=1d").content.decode()
    assert '<span id="psh-count">0 notifications</span>' in html


@pytest.fixture
def held_back(parked_and_pending: tuple[Notification, Notification]) -> Notification:
    parked, _ = parked_and_pending
    order = parked.object_id
    from testproject.shop.models import Order

    later = Order.objects.get(pk=order)
    later.status = "paid"
    later.save()
    return Notification.objects.filter(model="shop.Order", object_id=order).order_by("pk").last()


def test_held_back_is_said_in_the_list_the_detail_page_monitoring_and_the_commands(
    admin_client, parked_and_pending, held_back
):
    from io import StringIO

    from django.core.management import call_command

    from pgpubsub_simplehistory import monitoring

    parked, pending = parked_and_pending
    words = f"held back by parked #{parked.pk} (object {parked.object_id})"
    [row] = admin_client.get(CHANGELIST + "?state=held_back").context["cl"].result_list
    assert row.pk == held_back.pk
    html = " ".join(admin_client.get(CHANGELIST).content.decode().split())
    assert (
        '<span class="psh-state psh-held-back">held back</span> <span class="psh-detail">'
        f'by <a href="{change_url(parked)}">parked #{parked.pk}</a>'
    ) in html
    detail = admin_client.get(change_url(held_back)).content.decode()
    assert f'by <a href="{change_url(parked)}">parked #{parked.pk}</a>' in detail
    assert f"object {parked.object_id}</a>)" in detail

    assert {k: str(v) for k, v in monitoring.held_back([held_back.pk, pending.pk]).items()} == {
        held_back.pk: words
    }
    [blocker] = monitoring.blockers()
    assert (blocker.parked_id, blocker.held_back) == (parked.pk, 1)
    summary = monitoring.held_back_by_channel()[OrderChannel.listen_safe_name()]
    assert str(summary) == f"1 {words}"

    out = StringIO()
    call_command("listener_health", stdout=out)
    assert f"{OrderChannel.name()}: pending 2, parked 1, oldest pending" in out.getvalue()
    assert f"; 1 {words}\n" in out.getvalue()
    out = StringIO()
    call_command("listener_health", "--json", stdout=out)
    assert '"held_back": 1' in out.getvalue() and f'"parked_id": {parked.pk}' in out.getvalue()
    out = StringIO()
    call_command("pending_notifications", stdout=out)
    assert f"{OrderChannel.name()}: 1 {words}\n" in out.getvalue()


def test_nothing_is_held_back_on_a_channel_whose_parked_do_not_block(
    admin_client, held_back, monkeypatch
):
    from pgpubsub_simplehistory import monitoring

    monkeypatch.setattr(OrderChannel, "parked_blocks_object", False)
    assert monitoring.held_back([held_back.pk]) == {}
    assert not admin_client.get(CHANGELIST + "?state=held_back").context["cl"].result_list


def test_state_filter_finds_in_flight_and_waiting_for_retry(admin_client, parked_and_pending):
    busy, flaky = OrderFactory(status="new"), OrderFactory(status="new")
    in_flight = Notification.objects.get(model="shop.Order", object_id=str(busy.pk))
    waiting = Notification.objects.get(model="shop.Order", object_id=str(flaky.pk))
    now = timezone.now()
    Notification.objects.filter(pk=in_flight.pk).update(
        attempts=1, leased_by="host:1", leased_until=now + datetime.timedelta(seconds=10)
    )
    Notification.objects.filter(pk=waiting.pk).update(
        attempts=2, available_at=now + datetime.timedelta(minutes=5), last_error="E: later"
    )

    def ids(query: str) -> set[int]:
        return {n.pk for n in admin_client.get(CHANGELIST + query).context["cl"].result_list}

    assert ids("?state=in_flight") == {in_flight.pk}
    assert ids("?state=retry") == {waiting.pk}
    html = admin_client.get(CHANGELIST).content.decode()
    assert 'in flight</span> <span class="psh-detail">on host:1</span>' in html
    assert 'waiting for retry</span> <span class="psh-detail">due in 4' in html


TRACEBACK = (
    "Traceback (most recent call last):\n"
    '  File "shop/listeners.py", line 92, in on_order_saved\n'
    '    raise RuntimeError("listener refuses")\n'
    "RuntimeError: listener refuses"
)


def test_detail_page_is_readable(admin_client, parked_and_pending):
    import re

    from pgpubsub_simplehistory.event import MigrationRef
    from pgpubsub_simplehistory.monitoring import migration_ref

    parked, _ = parked_and_pending
    Notification.objects.filter(pk=parked.pk).update(last_traceback=TRACEBACK)
    response = admin_client.get(change_url(parked))
    html = response.content.decode()
    assert f'<pre class="psh-pre">{TRACEBACK.replace(chr(34), "&quot;")}</pre>' in html
    ref = migration_ref(parked.migration_id_at_change)
    assert isinstance(ref, MigrationRef) and ref.app == "shop"
    assert f'<div class="readonly">{ref.app}.{ref.name}</div>' in html  # not the raw id
    assert f"{OrderChannel.name()} <span class='psh-quiet'>(listen name" in html
    created = timezone.localtime(parked.created_at)
    assert f"{created:%Y-%m-%d %H:%M:%S}" in html  # with seconds
    assert re.search(r"<td>\d{4}-\d\d-\d\d \d\d:\d\d:\d\d</td>", html)  # history_date too
    assert "insert (+)" in html
    assert f"<h1>Notification #{parked.pk}</h1>" in html
    assert "Change notification" not in html and "Change " not in response.context["title"]
    assert f"&rsaquo; Notification #{parked.pk}" in html  # breadcrumbs
    assert 'name="_save"' not in html and "deletelink" not in html


def run_url(notification: Notification, action: str) -> str:
    return f"{CHANGELIST}{notification.pk}/run/{action}/"


def test_buttons_run_the_list_actions_with_the_same_permissions(parked_and_pending):
    parked, pending = parked_and_pending
    viewer = staff("view_notification")
    html = viewer.get(change_url(parked)).content.decode()
    assert 'id="psh-actions"' not in html
    assert viewer.post(run_url(parked, "retry")).status_code == 403
    assert viewer.get(run_url(parked, "retry")).status_code == 405
    parked.refresh_from_db()
    assert parked.state == "parked"

    changer = staff("view_notification", "change_notification")
    html = changer.get(change_url(parked)).content.decode()
    assert f'formaction="{run_url(parked, "retry")}"' in html
    assert 'id="psh-replay"' not in html and 'id="psh-purge"' not in html
    assert changer.post(run_url(parked, "purge"), {"post": "yes"}).status_code == 403
    response = changer.post(run_url(parked, "retry"))
    assert response.status_code == 302 and response["Location"] == change_url(parked)
    parked.refresh_from_db()
    assert (parked.state, parked.attempts) == ("pending", 0)
    messages = [str(m) for m in changer.get(change_url(parked)).context["messages"]]
    assert messages == ["1 parked notification made pending."]
    assert 'id="psh-retry"' not in changer.get(change_url(parked)).content.decode()

    replayer = staff("view_notification", "replay_notification")
    assert 'id="psh-replay"' in replayer.get(change_url(pending)).content.decode()
    response = replayer.post(run_url(pending, "replay"))
    assert response.status_code == 302 and response["Location"] == change_url(pending)
    assert ReceivedEvent.objects.filter(listener="on_order_saved").count() == 1


def test_purge_button_confirms_on_the_admins_delete_page_then_deletes(parked_and_pending):
    parked, pending = parked_and_pending
    deleter = staff("view_notification", "delete_notification")
    assert 'id="psh-purge"' not in deleter.get(change_url(pending)).content.decode()
    deleter.post(run_url(pending, "purge"), {"post": "yes"})
    assert Notification.objects.filter(pk=pending.pk).exists()  # only parked ones go

    assert 'id="psh-purge"' in deleter.get(change_url(parked)).content.decode()
    response = deleter.post(run_url(parked, "purge"))
    assert response.status_code == 200
    html = response.content.decode()
    assert "delete-confirmation delete-selected-confirmation" in html  # the admin's styling
    assert '<div class="breadcrumbs">' in html and "Purge parked notifications" in html
    assert 'class="psh-danger" id="psh-purge-confirm"' in html
    assert f'href="{change_url(parked)}" class="button cancel-link"' in html
    assert Notification.objects.filter(pk=parked.pk).exists()
    response = deleter.post(
        run_url(parked, "purge"), {"post": "yes", "_selected_action": str(parked.pk)}
    )
    assert response.status_code == 302 and response["Location"] == CHANGELIST
    assert not Notification.objects.filter(pk=parked.pk).exists()


def test_buttons_need_the_csrf_token(parked_and_pending):
    parked, _ = parked_and_pending
    user = User.objects.create_superuser("csrf", "csrf@example.com", "pw")
    client = Client(enforce_csrf_checks=True)
    client.force_login(user)
    assert client.post(run_url(parked, "retry")).status_code == 403
    parked.refresh_from_db()
    assert parked.state == "parked"
    page = client.get(change_url(parked))
    token = page.cookies["csrftoken"].value
    response = client.post(run_url(parked, "retry"), {"csrfmiddlewaretoken": token})
    assert response.status_code == 302
    parked.refresh_from_db()
    assert parked.state == "pending"


def test_the_list_has_six_columns_and_short_cells(admin_client, parked_and_pending):
    parked, _ = parked_and_pending
    Notification.objects.filter(pk=parked.pk).update(last_error="E: " + "x" * 500 + "\nmore")
    response = admin_client.get(CHANGELIST)
    assert len(response.context["cl"].list_display) == 7  # the checkbox and six columns
    html = response.content.decode()
    assert "E: " + "x" * 76 + "…" in html and "x" * 100 + "<" not in html
    assert "<h1>Notifications</h1>" in html
    assert "testproject.<wbr>shop.<wbr>channels.<wbr>OrderChannel" in html

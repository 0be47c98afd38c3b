"""The admin of the queue: stored notifications of history channels (admin autodiscovery).

Rows are read-only. Actions, on the list and as buttons on a notification's page, with the same
permissions: *retry* (parked → pending, due now; the change permission), *replay* (run the
listeners again for the historical record; ``replay_notification``), *purge* (delete parked
rows after a confirmation page; the delete permission). The dashboard
(``notification/dashboard/``, the view permission) shows the queue per channel, the last hour's
throughput and lag, and the parked errors (``dashboard.py``).

A notification's page shows the tracked object's field values only to a user who may view the
tracked model (``inspection.may_see_values``). The list never counts more than
:data:`COUNT_CAP` rows, so it stays fast during a backlog of millions.
"""

from __future__ import annotations

import datetime
from functools import cached_property
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.contrib.admin.utils import quote, unquote
from django.contrib.admin.views.main import ChangeList
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db.models import Q, QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseBase, HttpResponseNotAllowed
from django.shortcuts import redirect
from django.template.response import TemplateResponse
from django.urls import URLPattern, path, reverse
from django.utils import timezone
from django.utils.html import format_html, format_html_join
from django.utils.http import urlencode
from django.utils.safestring import SafeString, mark_safe
from django.utils.text import Truncator
from django.utils.timesince import timesince, timeuntil
from django.utils.translation import ngettext

from . import dashboard, monitoring, parking, queue, registry
from .inspection import history_type_label, inspect_notification, may_see_values
from .models import Notification, State
from .monitoring import channel_label
from .replaying import replay_notification

PENDING: str = str(State.PENDING)
PARKED: str = str(State.PARKED)

#: The list counts its rows up to this many; beyond, it says "more than 10,000".
COUNT_CAP = 10_000

_AGES = {
    "1m": ("older than 1 minute", datetime.timedelta(minutes=1)),
    "1h": ("older than 1 hour", datetime.timedelta(hours=1)),
    "1d": ("older than 1 day", datetime.timedelta(days=1)),
    "7d": ("older than 7 days", datetime.timedelta(days=7)),
}

#: The state filter's choices: the stored states, and what a pending one may be waiting for.
STATES = {
    "pending": "pending (all)",
    "in_flight": "in flight",
    "retry": "waiting for retry",
    "held_back": "held back",
    "parked": "parked",
}


def _wrapped(class_path: str) -> SafeString:
    """A class path that may wrap at its dots (they are long)."""
    return format_html_join(mark_safe(".<wbr>"), "{}", ((part,) for part in class_path.split(".")))


def _time(value: datetime.datetime | None) -> str:
    """A time with seconds, in the current time zone."""
    if value is None:
        return "-"
    return f"{timezone.localtime(value):%Y-%m-%d %H:%M:%S}"


class StateFilter(admin.SimpleListFilter):
    title = "state"
    parameter_name = "state"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return list(STATES.items())

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value == "in_flight":
            return queue.in_flight(queryset)
        if value == "retry":
            return queue.waiting_for_retry(queryset)
        if value == "held_back":
            return queue.held_back(queryset, monitoring.blocking_listen_names())
        if value in (PENDING, PARKED):
            filtered: QuerySet[Any] = queryset.filter(state=value)
            return filtered
        return queryset


class ChannelFilter(admin.SimpleListFilter):
    title = "channel"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, Any]]:
        # One entry per listen name in the queue, read off an index (queue.listen_names).
        names = queue.listen_names(model_admin.get_queryset(request).db)
        labels = sorted((channel_label(name), name) for name in names)
        return [(name, _wrapped(label)) for label, name in labels]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        return queryset.filter(listen_name=value) if value else queryset


class ModelFilter(admin.SimpleListFilter):
    title = "model"
    parameter_name = "model"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        # The models of the declared lockable channels: no query on the queue.
        labels = set()
        for channel in registry.channels():
            if channel.lock_notifications:
                try:
                    labels.add(channel.tracked_model()._meta.label)
                except Exception:  # a misdeclared channel (a system check reports it)
                    continue
        value = self.value()
        if value:
            labels.add(value)
        return [(label, label) for label in sorted(labels)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        return queryset.filter(model=value) if value else queryset


class AgeFilter(admin.SimpleListFilter):
    title = "age"
    parameter_name = "age"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [(key, label) for key, (label, _) in _AGES.items()]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if value not in _AGES:
            return queryset
        older: QuerySet[Any] = queryset.filter(created_at__lte=timezone.now() - _AGES[value][1])
        return older


class _SelectedOnlyFilter(admin.SimpleListFilter):
    """A filter the dashboard's links set; listed only while it is in use."""

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        value = self.value()
        return [(value, Truncator(value).chars(60))] if value else []


class ErrorFilter(_SelectedOnlyFilter):
    """Parked notifications whose last error starts with this line (the dashboard's groups)."""

    title = "last error"
    parameter_name = "error"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        if not value:
            return queryset
        filtered: QuerySet[Any]
        if len(value) >= 200:  # the dashboard groups by the first 200 characters
            filtered = queryset.filter(last_error__startswith=value)
        else:
            filtered = queryset.filter(Q(last_error=value) | Q(last_error__startswith=value + "\n"))
        return filtered


class ObjectFilter(_SelectedOnlyFilter):
    """The notifications of one object (with the channel filter: one object's queue)."""

    title = "object"
    parameter_name = "object"

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        filtered: QuerySet[Any] = queryset.filter(object_id=value) if value else queryset
        return filtered


class CappedPaginator(Paginator):  # type: ignore[type-arg]
    """Counts at most :data:`COUNT_CAP` + 1 rows (a full count of a long queue is slow)."""

    @cached_property
    def count(self) -> int:
        rows: Any = self.object_list
        return queue.capped_count(rows, COUNT_CAP)


class NotificationChangeList(ChangeList):
    """Adds, for the rows shown, which are held back by a parked notification (one query)."""

    @property
    def count_cap_text(self) -> str:
        return f"{COUNT_CAP:,}"

    def get_results(self, request: HttpRequest) -> None:
        super().get_results(request)
        self.result_count_capped = self.result_count > COUNT_CAP
        if self.result_count_capped:
            # The search bar says "N results" when N differs from the full count: no number.
            self.full_result_count = self.result_count
        rows = list(self.result_list)
        held = monitoring.held_back([n.pk for n in rows if n.state == PENDING], self.queryset.db)
        for notification in rows:
            notification._psh_held_back = held.get(notification.pk)


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Notification]
else:  # ModelAdmin is generic in django-stubs only
    _ModelAdmin = admin.ModelAdmin


@admin.register(Notification)
class NotificationAdmin(_ModelAdmin):
    list_display = ("id", "state_detail", "notification", "attempts", "created", "error")
    list_display_links = ("id",)
    list_filter = (StateFilter, ChannelFilter, ModelFilter, AgeFilter, ErrorFilter, ObjectFilter)
    search_fields = ("=object_id", "=history_id", "last_error")
    sortable_by = ("id",)  # the primary key: any other order sorts the whole queue
    ordering = ("id",)
    actions = ("retry", "replay", "purge")
    change_form_template = "admin/pgpubsub_simplehistory/notification/change_form.html"
    change_list_template = "admin/pgpubsub_simplehistory/notification/change_list.html"
    list_per_page = 100
    show_full_result_count = False
    paginator = CappedPaginator
    if hasattr(admin, "ShowFacets"):  # Django >= 5.0: facets count every choice
        show_facets = admin.ShowFacets.NEVER

    fieldsets = (
        (
            None,
            {
                "fields": (
                    "state_detail",
                    "channel_detail",
                    "object_detail",
                    "change_detail",
                    "migration",
                    "context",
                )
            },
        ),
        ("Delivery", {"fields": ("attempts", "created", "available", "lease")}),
        ("Last error", {"fields": ("error_text", "traceback")}),
    )

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [str(name) for _, options in self.fieldsets for name in options["fields"]]

    def get_fieldsets(self, request: HttpRequest, obj: Any = None) -> Any:
        if obj is not None and not (obj.last_error or obj.last_traceback):
            return self.fieldsets[:2]
        return self.fieldsets

    def get_changelist(self, request: HttpRequest, **kwargs: Any) -> type[ChangeList]:
        return NotificationChangeList

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        # A pending notification is still to be delivered: only parked ones may be deleted.
        if obj is not None and obj.state != State.PARKED:
            return False
        return super().has_delete_permission(request, obj)

    def has_replay_permission(self, request: HttpRequest) -> bool:
        opts = self.opts
        return request.user.has_perm(f"{opts.app_label}.replay_notification")

    def get_actions(self, request: HttpRequest, action_location: Any = None) -> dict[str, Any]:
        # Django 6.1 passes action_location (and warns about overrides without it); earlier
        # versions call get_actions(request).
        base: Any = super().get_actions  # the stubs do not know action_location yet
        if action_location is None:
            actions: dict[str, Any] = base(request)
        else:
            actions = base(request, action_location=action_location)
        actions.pop("delete_selected", None)  # purge is the confirmed, parked-only delete
        return actions

    def get_urls(self) -> list[URLPattern]:
        info = self.opts.app_label, self.opts.model_name
        view = self.admin_site.admin_view
        own = [
            path("dashboard/", view(self.dashboard_view), name="{}_{}_dashboard".format(*info)),
            path(
                "<path:object_id>/run/<str:action>/",
                view(self.run_action_view),
                name="{}_{}_run".format(*info),
            ),
        ]
        return own + super().get_urls()

    # Columns of the list, and fields of the detail page.

    def _held_back(self, obj: Notification) -> monitoring.HeldBack | None:
        if not hasattr(obj, "_psh_held_back"):
            held = monitoring.held_back([obj.pk], obj._state.db or "default")
            obj._psh_held_back = held.get(obj.pk)  # type: ignore[attr-defined]
        found: monitoring.HeldBack | None = obj._psh_held_back  # type: ignore[attr-defined]
        return found

    def _change_url(self, pk: Any) -> str:
        return reverse(
            f"admin:{self.opts.app_label}_{self.opts.model_name}_change", args=[quote(pk)]
        )

    def _changelist_url(self) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_changelist")

    def _state(self, obj: Notification) -> tuple[SafeString, SafeString | str]:
        """What the notification waits for: a state, and what it depends on."""
        if obj.state == PARKED:
            return mark_safe('<span class="psh-state psh-parked">parked</span>'), ""
        if obj.leased_until is not None:
            return (
                format_html(
                    '<span class="psh-state psh-in-flight" title="leased until {}">in flight'
                    "</span>",
                    _time(obj.leased_until),
                ),
                format_html("on {}", obj.leased_by or "?"),
            )
        held = self._held_back(obj)
        if held is not None:
            objects = f"{self._changelist_url()}?" + urlencode(
                {"channel": obj.listen_name, "object": held.object_id}
            )
            return (
                mark_safe('<span class="psh-state psh-held-back">held back</span>'),
                format_html(
                    'by <a href="{}">parked #{}</a> (<a href="{}">object {}</a>)',
                    self._change_url(held.parked_id),
                    held.parked_id,
                    objects,
                    held.object_id,
                ),
            )
        if obj.attempts and obj.available_at > timezone.now():
            return (
                format_html(
                    '<span class="psh-state psh-retry" title="due at {}">waiting for retry</span>',
                    _time(obj.available_at),
                ),
                format_html("due in {}", timeuntil(obj.available_at)),
            )
        return mark_safe('<span class="psh-state">pending</span>'), ""

    @admin.display(description="state")
    def state_detail(self, obj: Notification) -> SafeString:
        state, detail = self._state(obj)
        if not detail:
            return state
        return format_html('{} <span class="psh-detail">{}</span>', state, detail)

    @admin.display(description="notification")
    def notification(self, obj: Notification) -> SafeString:
        """The list's summary: the change and its object, then channel and history id."""
        return format_html(
            "{} of {} {}<br>"
            '<span class="psh-quiet psh-small" title="listen name {}">{} · history id {}</span>',
            history_type_label(obj.history_type),
            obj.model,
            Truncator(obj.object_id).chars(40),
            obj.listen_name,
            _wrapped(channel_label(obj.listen_name)),
            Truncator(obj.history_id).chars(40),
        )

    @admin.display(description="channel")
    def channel_detail(self, obj: Notification) -> SafeString:
        return format_html(
            "{} <span class='psh-quiet'>(listen name {})</span>",
            channel_label(obj.listen_name),
            obj.listen_name,
        )

    @admin.display(description="object")
    def object_detail(self, obj: Notification) -> str:
        return f"{obj.model} {Truncator(obj.object_id).chars(40)}"

    @admin.display(description="change")
    def change_detail(self, obj: Notification) -> SafeString:
        return format_html(
            "{} <span class='psh-quiet'>history id {}</span>",
            history_type_label(obj.history_type),
            Truncator(obj.history_id).chars(40),
        )

    @admin.display(description="migration at change")
    def migration(self, obj: Notification) -> str:
        ref = monitoring.migration_ref(obj.migration_id_at_change, obj._state.db or "default")
        if ref is not None:
            return str(ref)
        if obj.migration_id_at_change is None:
            return "(unknown)"
        return f"(django_migrations id {obj.migration_id_at_change}, no longer recorded)"

    @admin.display(description="created")
    def created(self, obj: Notification) -> SafeString:
        day, time = _time(obj.created_at).split(" ")
        return format_html(
            '<span title="{} ago">{}<span class="psh-time"> {}</span></span>',
            timesince(obj.created_at),
            day,
            time,
        )

    @admin.display(description="available at")
    def available(self, obj: Notification) -> str:
        return _time(obj.available_at)

    @admin.display(description="lease")
    def lease(self, obj: Notification) -> str:
        if obj.leased_until is None:
            return "not claimed"
        return f"claimed by {obj.leased_by or '?'} until {_time(obj.leased_until)}"

    @admin.display(description="last error")
    def error(self, obj: Notification) -> SafeString | str:
        if not obj.last_error:
            return ""
        line = obj.last_error.splitlines()[0]
        return format_html('<span title="{}">{}</span>', line, Truncator(line).chars(80))

    @admin.display(description="last error")
    def error_text(self, obj: Notification) -> SafeString:
        return format_html('<pre class="psh-pre">{}</pre>', obj.last_error or "-")

    @admin.display(description="traceback")
    def traceback(self, obj: Notification) -> SafeString:
        return format_html('<pre class="psh-pre">{}</pre>', obj.last_traceback or "-")

    # Pages.

    def changelist_view(
        self, request: HttpRequest, extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        extra = {
            "title": "Notifications",  # read-only: not "Select notification to change"
            "dashboard_url": self._dashboard_url(),
            **(extra_context or {}),
        }
        response = super().changelist_view(request, extra)
        context = getattr(response, "context_data", None)
        if context and getattr(context.get("cl"), "result_count_capped", False):
            context["selection_note_all"] = f"All (more than {COUNT_CAP:,}) selected"
        return response

    def _dashboard_url(self) -> str:
        return reverse(f"admin:{self.opts.app_label}_{self.opts.model_name}_dashboard")

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and self.has_view_or_change_permission(request, obj):
            extra["inspection"] = inspect_notification(
                obj, values=may_see_values(request.user, obj)
            )
            extra["title"] = f"Notification #{obj.pk}"
            extra["subtitle"] = (
                f"{history_type_label(obj.history_type)} of {obj.model} {obj.object_id}, "
                f"{channel_label(obj.listen_name)}"
            )
            extra["buttons"] = self._buttons(request, obj)
            extra["dashboard_url"] = self._dashboard_url()
        extra.update(
            show_save=False,
            show_save_and_continue=False,
            show_save_and_add_another=False,
            show_delete=False,  # the purge button is the confirmed, parked-only delete
        )
        return super().change_view(request, object_id, form_url, extra)

    def _buttons(self, request: HttpRequest, obj: Notification) -> list[dict[str, str]]:
        """The actions this user may run on this notification, as buttons (same permissions
        as the list's actions: ``get_actions``)."""
        allowed = self.get_actions(request)
        parked = obj.state == PARKED
        wanted = [
            ("retry", "Retry", "Make it pending again, due now, attempts reset.", parked),
            ("replay", "Replay", "Run the listeners again now; the notification stays.", True),
            ("purge", "Purge…", "Delete it, after a confirmation page.", parked),
        ]
        info = self.opts.app_label, self.opts.model_name
        return [
            {
                "name": name,
                "label": label,
                "help": help_text,
                "url": reverse("admin:{}_{}_run".format(*info), args=[quote(obj.pk), name]),
            }
            for name, label, help_text, applies in wanted
            if applies and name in allowed
        ]

    def run_action_view(self, request: HttpRequest, object_id: str, action: str) -> HttpResponse:
        """A button of a notification's page: the list's action ``action`` on this one row,
        with the list's permission checks (``get_actions``)."""
        if request.method != "POST":
            return HttpResponseNotAllowed(["POST"])
        obj = self.get_object(request, unquote(object_id))
        if obj is None:
            missing: HttpResponse = self._get_obj_does_not_exist_redirect(  # type: ignore[attr-defined]
                request, self.opts, object_id
            )
            return missing
        actions = self.get_actions(request)
        if action not in actions:
            raise PermissionDenied
        func = actions[action][0]
        queryset = self.get_queryset(request).filter(pk=obj.pk)
        response = func(self, request, queryset)
        if isinstance(response, HttpResponseBase):
            if isinstance(response, TemplateResponse) and response.context_data is not None:
                response.context_data["cancel_url"] = self._change_url(obj.pk)
            return response  # type: ignore[return-value]
        if self.get_queryset(request).filter(pk=obj.pk).exists():
            return redirect(self._change_url(obj.pk))
        return redirect(self._changelist_url())

    def dashboard_view(self, request: HttpRequest) -> HttpResponse:
        """The queue per channel, the last hour's throughput and lag, the parked errors."""
        if not self.has_view_or_change_permission(request):
            raise PermissionDenied
        data = dashboard.build(using=self.get_queryset(request).db)
        context = {
            **self.admin_site.each_context(request),
            "title": "Notifications dashboard",
            "opts": self.opts,
            "app_label": self.opts.app_label,
            "dashboard": data,
            "changelist_url": self._changelist_url(),
            "states": [
                ("pending", "pending", "Stored and not yet processed (all of the below)."),
                ("in_flight", "in flight", "Claimed by a worker that runs their listeners."),
                ("retry", "waiting for retry", "Failed before; due again later."),
                ("held_back", "held back", "Behind a parked notification of their object."),
                ("parked", "parked", "Failed max_attempts times: an operator decides."),
            ],
            "now": data.now,
        }
        return TemplateResponse(
            request, "admin/pgpubsub_simplehistory/notification/dashboard.html", context
        )

    # Actions.

    @admin.action(description="Retry selected parked notifications", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        skipped = queue.not_parked_in(queryset).count()
        done = parking.retry(queryset)
        self.message_user(
            request,
            ngettext(
                "%(n)d parked notification made pending.",
                "%(n)d parked notifications made pending.",
                done,
            )
            % {"n": done}
            + (f" {skipped} not parked, left alone." if skipped else ""),
            messages.SUCCESS,
        )

    @admin.action(
        description="Replay the historical records of selected notifications",
        permissions=["replay"],
    )
    def replay(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        replayed = 0
        for notification in queryset:
            try:
                replay_notification(notification)
            except Exception as exc:
                self.message_user(
                    request,
                    f"Replay of notification {notification.pk} ({notification.model} "
                    f"history_id={notification.history_id}) failed: {type(exc).__name__}: {exc}",
                    messages.ERROR,
                )
            else:
                replayed += 1
        if replayed:
            self.message_user(
                request,
                ngettext(
                    "Replayed %(n)d historical record (the notifications are unchanged).",
                    "Replayed %(n)d historical records (the notifications are unchanged).",
                    replayed,
                )
                % {"n": replayed},
                messages.SUCCESS,
            )

    @admin.action(description="Purge selected parked notifications", permissions=["delete"])
    def purge(
        self, request: HttpRequest, queryset: QuerySet[Notification]
    ) -> TemplateResponse | None:
        parked = queue.parked_in(queryset)
        if request.POST.get("post") == "yes":
            done = parking.purge(parked)
            self.message_user(
                request,
                ngettext(
                    "%(n)d parked notification deleted.",
                    "%(n)d parked notifications deleted.",
                    done,
                )
                % {"n": done}
                + " Their historical records stay: replay_history can run them again.",
                messages.SUCCESS,
            )
            return None
        context = {
            **self.admin_site.each_context(request),
            "title": "Purge parked notifications?",
            "opts": self.opts,
            "parked": list(parked[:200]),
            "parked_count": parked.count(),
            "skipped_count": queue.not_parked_in(queryset).count(),
            "queryset": queryset,
            "selected": request.POST.getlist(helpers.ACTION_CHECKBOX_NAME),
            "select_across": request.POST.get("select_across", "0"),
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "cancel_url": self._changelist_url(),
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/pgpubsub_simplehistory/notification/purge_confirmation.html", context
        )

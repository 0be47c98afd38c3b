"""The admin of the queue: stored notifications of history channels (admin autodiscovery).

Rows are read-only. Actions: *retry* (parked → pending, due now; needs the change permission),
*replay* (run the listeners again for the historical record; needs ``replay_notification``),
*purge* (delete parked rows after a confirmation page; needs the delete permission).
"""

from __future__ import annotations

import datetime
from typing import TYPE_CHECKING, Any

from django.contrib import admin, messages
from django.contrib.admin import helpers
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse
from django.template.response import TemplateResponse
from django.utils import timezone
from django.utils.translation import ngettext

from . import parking
from .inspection import inspect_notification
from .models import Notification, State
from .monitoring import channel_label
from .replaying import replay_notification

_AGES = {
    "1m": ("older than 1 minute", datetime.timedelta(minutes=1)),
    "1h": ("older than 1 hour", datetime.timedelta(hours=1)),
    "1d": ("older than 1 day", datetime.timedelta(days=1)),
    "7d": ("older than 7 days", datetime.timedelta(days=7)),
}


class ChannelFilter(admin.SimpleListFilter):
    title = "channel"
    parameter_name = "channel"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        names = model_admin.get_queryset(request).values_list("listen_name", flat=True).distinct()
        return [(name, channel_label(name)) for name in sorted(names)]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        value = self.value()
        return queryset.filter(listen_name=value) if value else queryset


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


if TYPE_CHECKING:
    _ModelAdmin = admin.ModelAdmin[Notification]
else:  # ModelAdmin is generic in django-stubs only
    _ModelAdmin = admin.ModelAdmin


@admin.register(Notification)
class NotificationAdmin(_ModelAdmin):
    list_display = (
        "id",
        "state",
        "channel_name",
        "model",
        "history_type",
        "history_id",
        "object_id",
        "attempts",
        "created_at",
        "available_at",
        "error",
    )
    list_display_links = ("id", "history_id")
    list_filter = ("state", ChannelFilter, "model", AgeFilter)
    search_fields = ("history_id", "object_id", "last_error")
    date_hierarchy = "created_at"
    ordering = ("id",)
    actions = ("retry", "replay", "purge")
    change_form_template = "admin/pgpubsub_simplehistory/notification/change_form.html"
    list_per_page = 100

    def get_readonly_fields(self, request: HttpRequest, obj: Any = None) -> list[str]:
        return [f.name for f in Notification._meta.fields]

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

    @admin.display(description="channel", ordering="listen_name")
    def channel_name(self, obj: Notification) -> str:
        return channel_label(obj.listen_name)

    @admin.display(description="last error")
    def error(self, obj: Notification) -> str:
        return obj.last_error.splitlines()[0][:120] if obj.last_error else ""

    def change_view(
        self,
        request: HttpRequest,
        object_id: str,
        form_url: str = "",
        extra_context: dict[str, Any] | None = None,
    ) -> HttpResponse:
        extra = dict(extra_context or {})
        obj = self.get_object(request, object_id)
        if obj is not None and self.has_view_or_change_permission(request, obj):
            extra["inspection"] = inspect_notification(obj)
        extra.update(show_save=False, show_save_and_continue=False, show_save_and_add_another=False)
        return super().change_view(request, object_id, form_url, extra)

    @admin.action(description="Retry selected parked notifications", permissions=["change"])
    def retry(self, request: HttpRequest, queryset: QuerySet[Notification]) -> None:
        skipped = queryset.exclude(state=State.PARKED).count()
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
        parked = queryset.filter(state=State.PARKED)
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
            "skipped_count": queryset.exclude(state=State.PARKED).count(),
            "queryset": queryset,
            "action_checkbox_name": helpers.ACTION_CHECKBOX_NAME,
            "media": self.media,
        }
        return TemplateResponse(
            request, "admin/pgpubsub_simplehistory/notification/purge_confirmation.html", context
        )

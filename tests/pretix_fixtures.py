"""Creates the real-pretix test data; runs INSIDE the pretix virtualenv, never under pytest.

Usage: ``PRETIX_CONFIG_FILE=... python tests/pretix_fixtures.py OUT.json [BULK]`` with the
database the config names already migrated. ``BULK`` more paid one-ticket orders of "Standard"
are created in bulk for the benchmark (tests/bench/bench_pretix_sync.py), the first 2,000 of
their secrets listed under "bulk". Writes what the tests need (ids, tokens, ticket secrets) to
OUT.json (mode 0600): tokens and secrets never go to stdout or stderr.

Two organizers, so a device's database key differs from its per-organizer ``device_id``: "alpha"
gets one device first; in "stadium" the other scanner is created before the gate, so the other
scanner's database key equals the gate's ``device_id`` (the mix-up issue 11 is about shows both
ways). The stadium event uses ``pretix_sig1`` secrets (pretix makes the event's key pair when it
signs the first one); products "Standard" and "VIP"; check-in lists "All" (all products) and
"VIP only"; paid orders, one position each. Also an event series "tour26" (dates "berlin" and
"hamburg", a check-in list for Berlin only).
"""

from __future__ import annotations

import json
import os
import sys
from datetime import timedelta
from decimal import Decimal
from typing import Any

TICKETS = {"standard": 40, "vip": 4}


def main(out: str, bulk: int = 0) -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "pretix.settings")
    import django

    django.setup()
    from django.utils.timezone import now
    from django_scopes import scopes_disabled

    with scopes_disabled():
        data = _create(now())
        if bulk:
            data["bulk"] = _bulk(data, bulk, now())
    fd = os.open(out, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        json.dump(data, f)


def _create(t0: Any) -> dict[str, Any]:
    from django.db import transaction
    from pretix.base.models import CheckinList, Device, Event, Item, Organizer, Team

    alpha = Organizer.objects.create(name="Alpha", slug="alpha")
    alpha_device = Device.objects.create(organizer=alpha, name="alpha scanner", all_events=True)
    org = Organizer.objects.create(name="Stadium", slug="stadium")
    event = Event.objects.create(
        organizer=org, name="Season 26", slug="season26", currency="EUR", live=True,
        date_from=t0 - timedelta(hours=1), date_to=t0 + timedelta(days=2),
    )  # fmt: skip
    event.settings.ticket_secret_generator = "pretix_sig1"
    standard = Item.objects.create(event=event, name="Standard", default_price=Decimal("20"))
    vip = Item.objects.create(event=event, name="VIP", default_price=Decimal("90"))
    all_list = CheckinList.objects.create(event=event, name="All", all_products=True)
    vip_list = CheckinList.objects.create(event=event, name="VIP only", all_products=False)
    vip_list.limit_products.add(vip)
    other = Device.objects.create(organizer=org, name="other scanner", all_events=True)
    gate = Device.objects.create(organizer=org, name="turnstile", all_events=True)
    team = Team.objects.create(
        organizer=org, name="tests", all_events=True, all_event_permissions=True,
        all_organizer_permissions=True,
    )  # fmt: skip
    admin_token = team.tokens.create(name="tests").token
    channel = org.sales_channels.get(identifier="web")
    secrets: dict[str, list[str]] = {"standard": [], "vip": []}
    for kind, item in (("standard", standard), ("vip", vip)):
        for i in range(TICKETS[kind]):
            with transaction.atomic():
                secrets[kind].append(_paid_order(event, channel, item, f"{kind}{i}", t0))
    series = _series(org, channel, t0)
    return {
        "series": series,
        "organizer": org.slug,
        "event": event.slug,
        "lists": {"all": all_list.pk, "vip": vip_list.pk},
        "items": {"standard": standard.pk, "vip": vip.pk},
        "admin_token": admin_token,
        "devices": {
            name: {"pk": d.pk, "device_id": d.device_id, "init_token": d.initialization_token}
            for name, d in (("alpha", alpha_device), ("other", other), ("gate", gate))
        },
        "secrets": secrets,
    }


def _series(org: Any, channel: Any, t0: Any) -> dict[str, Any]:
    """An event series "tour26" with dates "berlin" and "hamburg", a list for Berlin only, and
    two paid tickets per date."""
    from django.db import transaction
    from pretix.base.models import CheckinList, Event, Item, SubEvent

    event = Event.objects.create(
        organizer=org, name="Tour 26", slug="tour26", currency="EUR", live=True,
        has_subevents=True, date_from=t0 - timedelta(hours=1),
    )  # fmt: skip
    event.settings.ticket_secret_generator = "pretix_sig1"
    item = Item.objects.create(event=event, name="Tour ticket", default_price=Decimal("30"))
    dates = {
        name: SubEvent.objects.create(
            event=event, name=name, active=True, date_from=t0 + timedelta(hours=i)
        )
        for i, name in enumerate(("berlin", "hamburg"))
    }
    berlin = CheckinList.objects.create(event=event, name="Berlin", all_products=True,
                                        subevent=dates["berlin"])  # fmt: skip
    secrets: dict[str, list[str]] = {}
    for name, date in dates.items():
        secrets[name] = []
        for i in range(2):
            with transaction.atomic():
                secrets[name].append(
                    _paid_order(event, channel, item, f"{name}{i}", t0, subevent=date)
                )
    return {
        "event": event.slug,
        "list": berlin.pk,
        "subevents": {name: d.pk for name, d in dates.items()},
        "secrets": secrets,
    }


def _paid_order(
    event: Any, channel: Any, item: Any, name: str, t0: Any, subevent: Any = None
) -> str:
    """A paid order with one position of ``item`` (for ``subevent``); returns its secret."""
    from pretix.base.models import Order, OrderPosition

    order = Order.objects.create(
        event=event, status=Order.STATUS_PAID, email=f"{name}@example.org", datetime=t0,
        expires=t0 + timedelta(days=10), total=item.default_price, locale="en",
        sales_channel=channel,
    )  # fmt: skip
    pos = OrderPosition.objects.create(
        order=order, item=item, price=item.default_price, subevent=subevent
    )
    order.create_transactions(is_new=True)
    secret: str = pos.secret
    return secret


def _bulk(data: dict[str, Any], count: int, t0: Any) -> list[str]:
    """``count`` paid one-position orders of "Standard" via bulk inserts (no per-order save:
    codes, secrets and pseudonymisation ids are made here; no transactions ledger, which
    check-ins do not need). Returns the first 2,000 secrets."""
    import secrets as rnd

    from django.db import transaction
    from pretix.base.models import Event, Item, Order, OrderPosition

    event = Event.objects.get(organizer__slug=data["organizer"], slug=data["event"])
    item = Item.objects.get(pk=data["items"]["standard"])
    channel = event.organizer.sales_channels.get(identifier="web")
    generator = event.ticket_secret_generator
    chunk = 2000
    out: list[str] = []
    for start in range(0, count, chunk):
        n = min(chunk, count - start)
        with transaction.atomic():
            orders = Order.objects.bulk_create([
                Order(
                    event=event, organizer=event.organizer, code=f"B{start + i:08d}"[-9:],
                    status=Order.STATUS_PAID, email=f"bulk{start + i}@example.org",
                    datetime=t0, expires=t0 + timedelta(days=10), total=item.default_price,
                    locale="en", sales_channel=channel,
                )
                for i in range(n)
            ])  # fmt: skip
            positions = []
            for order in orders:
                secret = generator.generate_secret(item=item, variation=None, subevent=None,
                                                   current_secret=None, force_invalidate=True)  # fmt: skip
                positions.append(OrderPosition(
                    order=order, organizer=event.organizer, item=item, positionid=1,
                    price=item.default_price, tax_rate=Decimal("0"), tax_value=Decimal("0"),
                    secret=secret, pseudonymization_id=rnd.token_hex(5).upper(),
                ))  # fmt: skip
            OrderPosition.objects.bulk_create(positions)
        out += [p.secret for p in positions][: max(0, 2000 - len(out))]
    return out


if __name__ == "__main__":
    main(sys.argv[1], int(sys.argv[2]) if len(sys.argv) > 2 else 0)

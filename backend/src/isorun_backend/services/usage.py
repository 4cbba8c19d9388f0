"""Metering: vCPU-seconds, GiB-seconds and their price, per sandbox and per tenant.

```
a sandbox's metered time   created_at ──────────────► stopped_at   (or now while running)
a window since..until      clips it:  max(created_at, since) .. min(end, until)
hibernated spans           are not metered: each span's part inside the clipped life is
                           taken off (the Sandbox object's ``usage`` uses the row's
                           ``hibernated_s`` and open ``hibernated_at`` instead of the spans)
vcpu_seconds   = vcpus * seconds
gib_seconds    = memory_mib / 1024 * seconds
cost_usd       = (vcpu_seconds * price_vcpu_hour_usd + gib_seconds * price_gib_hour_usd) / 3600
```

With the default prices ($0.02 per vCPU-hour, $0.02 per GiB-hour) a 1 vCPU, 1 GiB sandbox costs
$0.04 an hour. Seconds are exact (to the microsecond) and rounded only in the answer:
usage to the millisecond, cost to a millionth of a dollar; totals are summed before rounding.
Deleted sandboxes are metered too: they ran, and a DELETE must not erase the bill.

The clock is injected (``Meter(clock=...)``) so that tests control "now".
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass

from sqlalchemy import or_, select

from isorun_backend.core.config import BackendSettings
from isorun_backend.core.security import Principal
from isorun_backend.models import (
    HibernationSpan,
    SandboxRow,
    SandboxUsage,
    UsageLine,
    UsageReport,
    utcnow,
)
from isorun_backend.services.errors import InvalidRequest
from isorun_backend.storage import Database

Clock = Callable[[], dt.datetime]


@dataclass(frozen=True, slots=True)
class Totals:
    """Unrounded usage, so that sums stay exact until the answer rounds them."""

    vcpu_seconds: float = 0.0
    gib_seconds: float = 0.0
    cost_usd: float = 0.0

    def __add__(self, other: Totals) -> Totals:
        return Totals(
            self.vcpu_seconds + other.vcpu_seconds,
            self.gib_seconds + other.gib_seconds,
            self.cost_usd + other.cost_usd,
        )

    def rounded(self) -> dict[str, float]:
        return {
            "vcpu_seconds": round(self.vcpu_seconds, 3),
            "gib_seconds": round(self.gib_seconds, 3),
            "cost_usd": round(self.cost_usd, 6),
        }


class Meter:
    """Prices a sandbox's time; ``clock`` is "now" for the sandboxes still running."""

    def __init__(self, settings: BackendSettings, clock: Clock = utcnow) -> None:
        self.vcpu_hour_usd = settings.price_vcpu_hour_usd
        self.gib_hour_usd = settings.price_gib_hour_usd
        self.clock = clock

    def totals(self, vcpus: int, memory_mib: int, seconds: float) -> Totals:
        vcpu_seconds = vcpus * seconds
        gib_seconds = memory_mib / 1024 * seconds
        cost = (vcpu_seconds * self.vcpu_hour_usd + gib_seconds * self.gib_hour_usd) / 3600
        return Totals(vcpu_seconds, gib_seconds, cost)

    def span(
        self,
        row: SandboxRow,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> tuple[dt.datetime, dt.datetime]:
        """The part of the sandbox's life inside the window (end before start: none of it)."""
        end = row.stopped_at if row.stopped_at is not None else self.clock()
        start = row.created_at if since is None else max(row.created_at, since)
        return start, end if until is None else min(end, until)

    def sandbox(self, row: SandboxRow) -> SandboxUsage:
        """The sandbox's whole life so far, less its hibernations: the Sandbox's ``usage``."""
        start, end = self.span(row)
        paused = row.hibernated_s or 0.0
        if row.hibernated_at is not None:
            paused += max((end - row.hibernated_at).total_seconds(), 0.0)
        seconds = max((end - start).total_seconds() - paused, 0.0)
        totals = self.totals(row.vcpus, row.memory_mib, seconds)
        return SandboxUsage(**totals.rounded(), url_requests=row.url_requests)

    def between(
        self,
        row: SandboxRow,
        start: dt.datetime,
        end: dt.datetime,
        hibernations: list[HibernationSpan] = [],  # noqa: B006 - never mutated
    ) -> Totals:
        """Usage over ``start`` .. ``end``, less the parts of ``hibernations`` inside it."""
        seconds = max((end - start).total_seconds(), 0.0)
        for span in hibernations:
            span_end = span.ended_at if span.ended_at is not None else self.clock()
            overlap = (min(end, span_end) - max(start, span.started_at)).total_seconds()
            seconds -= max(overlap, 0.0)
        return self.totals(row.vcpus, row.memory_mib, max(seconds, 0.0))


class UsageService:
    """GET /v1/usage: a tenant's metered sandboxes over a window."""

    def __init__(self, db: Database, meter: Meter) -> None:
        self._db = db
        self._meter = meter

    async def report(
        self,
        principal: Principal,
        since: dt.datetime | None = None,
        until: dt.datetime | None = None,
    ) -> UsageReport:
        """The tenant's totals and one line per sandbox that ran in ``since`` .. ``until``.

        ``since`` defaults to the beginning, ``until`` to now. Lines are oldest first.

        Raises:
            InvalidRequest: a time without a zone, or ``since`` not before ``until``.
        """
        until = self._meter.clock() if until is None else until
        for name, value in (("since", since), ("until", until)):
            if value is not None and value.tzinfo is None:
                raise InvalidRequest("a time needs a zone (Z or +hh:mm)", field=name)
        if since is not None and since >= until:
            raise InvalidRequest("must be before until", field="since")
        query = select(SandboxRow).where(
            SandboxRow.tenant_id == principal.tenant_id, SandboxRow.created_at < until
        )
        if since is not None:
            query = query.where(or_(SandboxRow.stopped_at.is_(None), SandboxRow.stopped_at > since))
        async with self._db.session() as session:
            rows = list(await session.scalars(query.order_by(SandboxRow.created_at, SandboxRow.id)))
            spans: dict[str, list[HibernationSpan]] = {}
            if rows:
                hibernations = await session.scalars(
                    select(HibernationSpan).where(
                        HibernationSpan.sandbox_id.in_([row.id for row in rows])
                    )
                )
                for span in hibernations:
                    spans.setdefault(span.sandbox_id, []).append(span)
        lines: list[UsageLine] = []
        total = Totals()
        url_requests = 0
        for row in rows:
            start, end = self._meter.span(row, since, until)
            if end <= start:
                continue
            usage = self._meter.between(row, start, end, spans.get(row.id, []))
            total += usage
            url_requests += row.url_requests
            lines.append(
                UsageLine(
                    sandbox_id=row.id,
                    vcpus=row.vcpus,
                    memory_mib=row.memory_mib,
                    start=start,
                    end=end,
                    url_requests=row.url_requests,
                    **usage.rounded(),
                )
            )
        return UsageReport(
            since=since, until=until, data=lines, url_requests=url_requests, **total.rounded()
        )

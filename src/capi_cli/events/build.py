"""One canonical record to Meta's event payload, per channel (SPEC §4), collecting every problem.

`EventBuilder.head` reads what identifies an event (name, time, channel, id) without hashing
anything, so the pipeline can check duplicates and skip events already sent; `body` normalizes,
hashes and assembles the payload. Both append `(field, code, message)` to a list of errors.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any, Protocol

from capi_cli.events.custom import custom_data, passthrough
from capi_cli.events.fields import first_value, split_full_name
from capi_cli.events.normalize import NORMALIZERS, FieldError, is_hashed
from capi_cli.events.times import parse_event_time, timezone_named
from capi_cli.events.validate import UNATTRIBUTED
from capi_cli.rules import (
    ACTION_SOURCE,
    CHANNELS,
    EVENT_AGE_MARGIN_SECONDS,
    EVENT_NAME_BY_LOWER,
    HASHED_FIELDS,
    MAX_EVENT_AGE_SECONDS,
    MAX_FUTURE_SKEW_SECONDS,
    UNHASHED_USER_DATA,
)

Errors = list[tuple[str | None, str, str]]

MISSING_CLID = ("no ctwa_clid and no stored referral for this customer within the attribution window; "
                "add a ctwa_clid column or run `capi extract-referral` on your webhooks")


class ReferralStore(Protocol):
    """What the referral join needs from the ledger."""

    def latest_whatsapp_referral(self, user: str, at: int, window_seconds: int) -> dict[str, Any] | None: ...

    def account_for_user(self, channel: str, user_id: str) -> str | None: ...


@dataclass(slots=True)
class Head:
    event_name: str | None
    event_time: int | None
    channel: str | None
    event_id: str | None
    time_given: bool = True  # False: the row had no event_time and it is "now"


_sha256 = hashlib.sha256
_OTHER_HASHED = tuple(f for f in HASHED_FIELDS if f != "country")
_HASHING_ORDER = tuple((field, field == "ph") for field in _OTHER_HASHED)  # (field, is the phone)
# Fields whose values repeat across rows; em, ph and external_id are mostly one per customer.
_CACHED_FIELDS = ("fn", "ln", "ge", "db", "ct", "st", "zp", "country")
_DIGEST_CACHE_SIZE = 4096


def derive_event_id(*parts: str) -> str:
    """A stable event id: the same parts always give the same id (128 bits of SHA-256)."""
    return _sha256("\x1f".join(("capi1", *parts)).encode("utf-8")).hexdigest()[:32]


def _event_name(raw_name: Any) -> str | None:
    """Meta's spelling of an event name given in any case, or None when it is not one."""
    return EVENT_NAME_BY_LOWER.get(str(raw_name).strip().lower())


def _given_event_id(name: str, record: dict[str, Any]) -> str | None:
    """The event id a record gives outright: its event_id, else one derived from its order_id."""
    event_id = first_value(record["event_id"]) if "event_id" in record else None
    if event_id is None:
        order_id = first_value(record["order_id"]) if "order_id" in record else None
        if order_id is not None:
            event_id = derive_event_id(name, "order", order_id)
    return event_id


def _values(value: Any) -> list[str]:
    """Several values of one field: a list, or `a|b` in a CSV cell."""
    if type(value) is str:
        return [part for part in value.split("|") if part.strip()] if "|" in value else [value]
    if isinstance(value, list | tuple):
        return [str(v) for v in value if v is not None and str(v).strip()]
    text = str(value)
    if "|" in text:
        return [part for part in text.split("|") if part.strip()]
    return [text]


class EventBuilder:
    # The settings read here (worker processes get these and nothing else, no secrets).
    SETTINGS = ("default_country", "timezone", "ig_account_field", "channel", "currency",
                "whatsapp_business_account_id", "page_id", "ig_account_id", "locale")

    def __init__(
        self,
        settings: Any,
        *,
        now: float,
        window_seconds: int,
        referrals: ReferralStore | None = None,
        date_format: str | None = None,
    ) -> None:
        locale = getattr(settings, "locale", None)
        if locale:
            from capi_cli.inputs.locales import day_first

            self.day_first: bool | None = day_first(locale)
        else:
            self.day_first = None
        self.date_format = date_format
        country = getattr(settings, "default_country", None)
        self.default_country: str | None = country.upper() if country else None
        self._default_country_lower = country.lower() if country else None
        self.tz = timezone_named(getattr(settings, "timezone", None) or "UTC")
        self.ig_field: str = getattr(settings, "ig_account_field", None) or "ig_account_id"
        self.default_channel: str | None = getattr(settings, "channel", None)
        self.default_currency: str | None = getattr(settings, "currency", None)
        self.default_accounts: dict[str, str | None] = {
            "whatsapp": getattr(settings, "whatsapp_business_account_id", None),
            "messenger": getattr(settings, "page_id", None),
            "instagram": getattr(settings, "ig_account_id", None),
        }
        self.now = int(now)
        self.oldest = self.now - MAX_EVENT_AGE_SECONDS + EVENT_AGE_MARGIN_SECONDS
        self.latest = self.now + MAX_FUTURE_SKEW_SECONDS
        self.window_seconds = window_seconds
        self.referrals = referrals
        self._digests: dict[str, dict[Any, Any]] = {f: {} for f in _CACHED_FIELDS}

    # -- identity ---------------------------------------------------------------------------

    @staticmethod
    def key(record: dict[str, Any]) -> tuple[str, str] | None:
        """(event_name, event_id) when the record names its event outright (an event_id or an
        order_id): exactly what `head` finds for it, read from fields.KEY_FIELDS alone. None when
        the id needs more of the record (then only `head` knows it)."""
        raw_name = record.get("event_name")
        if raw_name is None:
            return None
        name = _event_name(raw_name)
        if name is None:
            return None
        event_id = _given_event_id(name, record)
        return None if event_id is None else (name, event_id)

    def head(self, record: dict[str, Any], errors: Errors) -> Head:
        raw_name = record.get("event_name")
        name: str | None = None
        if raw_name is None:
            errors.append(("event_name", "missing_field", "no event_name: add the column or --set event_name=Purchase"))
        else:
            name = _event_name(raw_name)
            if name is None:
                errors.append(
                    ("event_name", "unknown_event_name",
                     f"{raw_name!r} is not a business-messaging event (Purchase, LeadSubmitted, OrderCreated, ...)")
                )

        raw_time = record.get("event_time")
        event_time: int | None = self.now
        if type(raw_time) is str and 9 <= len(raw_time) <= 10 and raw_time.isdigit():
            event_time = int(raw_time)  # Unix seconds, the usual export; the general case below
        elif raw_time is not None:
            try:
                event_time = parse_event_time(raw_time, self.tz, self.day_first, self.date_format)
            except FieldError as exc:
                errors.append(("event_time", exc.code, exc.message))
                event_time = None
        if event_time is not None:
            if event_time < self.oldest:
                errors.append(
                    ("event_time", "event_too_old",
                     f"event_time {raw_time!r} is more than 7 days ago (or within 5 minutes of it); "
                     "Meta refuses the whole batch for it")
                )
            elif event_time > self.latest:
                errors.append(("event_time", "event_in_future", f"event_time {raw_time!r} is in the future"))

        channel = self._channel(record, errors)

        event_id = _given_event_id(name, record) if name is not None else (
            first_value(record["event_id"]) if "event_id" in record else None)
        if event_id is None and name is not None:
            if raw_time is not None and event_time is not None:
                event_id = derive_event_id(name, channel or "", self._user_key(record, channel), str(event_time))
            else:
                # No order id and no time: the row itself is the identity (same row, same id).
                event_id = derive_event_id(name, "row", json.dumps(record, sort_keys=True, default=str))
        return Head(name, event_time, channel, event_id, raw_time is not None)

    def _channel(self, record: dict[str, Any], errors: Errors) -> str | None:
        given = record.get("messaging_channel")
        if given is not None:
            channel = str(given).strip().lower()
            if channel in CHANNELS:
                return channel
            errors.append(("messaging_channel", "invalid_value", f"messaging_channel {given!r}: use whatsapp, messenger or instagram"))
            return None
        if "ctwa_clid" in record or "wa_id" in record or "whatsapp_business_account_id" in record:
            return "whatsapp"
        if "page_scoped_user_id" in record or "page_id" in record:
            return "messenger"
        if "ig_sid" in record or "ig_account_id" in record:
            return "instagram"
        if self.default_channel:
            return self.default_channel
        errors.append(
            ("messaging_channel", "missing_field",
             "no messaging_channel and none inferable: add a channel column, a click id / PSID / IGSID, or set CAPI_CHANNEL")
        )
        return None

    @staticmethod
    def _user_key(record: dict[str, Any], channel: str | None) -> str:
        if channel == "messenger":
            keys: tuple[str, ...] = ("page_scoped_user_id",)
        elif channel == "instagram":
            keys = ("ig_sid",)
        else:
            keys = ("wa_id", "ph", "bsuid", "ctwa_clid")
        for key in (*keys, "external_id", "em"):
            found = first_value(record.get(key))
            if found is not None:
                return f"{key}={found}"
        return ""

    # -- payload ----------------------------------------------------------------------------

    def body(self, record: dict[str, Any], head: Head, errors: Errors) -> tuple[dict[str, Any], bool]:
        user_data: dict[str, Any] = {}
        if "full_name" in record:
            split_full_name(record)
        digests = self._digests
        row_country: str | None = None  # the row's own country, normalized
        raw_country = record.get("country")
        if raw_country is not None:
            hit = digests["country"].get(raw_country) if type(raw_country) is str else None
            if hit is not None and hit[0] is not None:  # _hash_field's cached answer, inline
                user_data["country"] = [hit[0]]
                row_country = hit[1]
            else:
                hashes, row_country = self._hash_field("country", raw_country, None, errors)
                if hashes:
                    user_data["country"] = hashes
        country_context = row_country or self._default_country_lower
        if "ph" not in record and "wa_id" in record:
            record["ph"] = record["wa_id"]
        phone: str | None = None
        for field, is_phone in _HASHING_ORDER:
            raw = record.get(field)
            if raw is None:
                continue
            # A phone without its country code is read in the row's own country first (SPEC §4).
            context = (row_country.upper() if row_country else self.default_country) if is_phone else country_context
            cache = digests.get(field)
            if cache is not None and type(raw) is str:  # the common case inline: a value seen before
                hit = cache.get((raw, context) if context is not None else raw)
                if hit is not None and hit[0] is not None:
                    user_data[field] = [hit[0]]
                    if is_phone:  # cached by the referral join (events.join), which needs it too
                        phone = hit[1]
                    continue
            hashes, normalized = self._hash_field(field, raw, context, errors)
            if hashes:
                user_data[field] = hashes
                if is_phone:
                    phone = normalized
        if "country" in user_data:  # Meta's field order does not matter; ours is stable
            user_data["country"] = user_data.pop("country")
        for field in UNHASHED_USER_DATA:
            if field in record:
                value = first_value(record[field])
                if value is not None:
                    user_data[field] = value

        attributed = self._ids(record, head, user_data, phone, errors)

        custom = custom_data(record, head.event_name, self.default_currency, errors)
        payload: dict[str, Any] = {
            "event_name": head.event_name,
            "event_time": head.event_time,
            "event_id": head.event_id,
            "action_source": ACTION_SOURCE,
            "messaging_channel": head.channel,
            "user_data": user_data,
        }
        if custom:
            payload["custom_data"] = custom
        passthrough(record, payload, errors)
        return payload, attributed

    def phone_context(self, record: dict[str, Any]) -> str | None:
        """The country a phone of `record` without its country code is read in, as `body` reads
        it: the row's own country (cached), else the default country."""
        raw_country = record.get("country")
        if raw_country is not None:
            normalized = self._hash_field("country", raw_country, None, [])[1]
            if normalized:
                return normalized.upper()
        return self.default_country

    def _hash_field(
        self, field: str, raw: Any, context: str | None, errors: Errors
    ) -> tuple[list[str], str | None]:
        """(hashes in order without repeats, the first normalized value unless it came hashed)."""
        if type(raw) is not str or "|" in raw:
            return self._hash_values(field, _values(raw), context, errors)
        # One value, the common case, kept short: this runs for every field of every row.
        cache = self._digests.get(field)
        if cache is None:
            text = raw.strip()
            if len(text) == 64 and is_hashed(text):
                return [text.lower()], None
            try:
                normalized = NORMALIZERS[field](text, context)
            except FieldError as exc:
                errors.append((field, exc.code, exc.message))
                return [], None
            return [_sha256(normalized.encode()).hexdigest()], normalized
        # Names, cities, states, zips repeat across rows: one dict lookup instead of the work.
        key = (raw, context) if context is not None else raw
        hit = cache.get(key)
        if hit is None:
            hit_errors: Errors = []
            hashes, first = self._hash_values(field, [raw], context, hit_errors)
            hit = (None, None, hit_errors[0]) if hit_errors else (hashes[0], first, None)
            if len(cache) >= _DIGEST_CACHE_SIZE:
                cache.clear()
            cache[key] = hit
        cached_digest, cached_value, error = hit
        if cached_digest is None:
            errors.append(error)  # type: ignore[arg-type]
            return [], None
        return [cached_digest], cached_value

    @staticmethod
    def _hash_values(
        field: str, values: list[str], context: str | None, errors: Errors
    ) -> tuple[list[str], str | None]:
        normalizer = NORMALIZERS[field]
        hashes: list[str] = []
        first: str | None = None
        for value in values:
            text = value.strip()
            if len(text) == 64 and is_hashed(text):
                digest = text.lower()
            else:
                try:
                    normalized = normalizer(text, context)
                except FieldError as exc:
                    errors.append((field, exc.code, exc.message))
                    continue
                if first is None:
                    first = normalized
                digest = _sha256(normalized.encode()).hexdigest()
            if digest not in hashes:
                hashes.append(digest)
        return hashes, first

    def _ids(
        self, record: dict[str, Any], head: Head, user_data: dict[str, Any], phone: str | None, errors: Errors
    ) -> bool:
        channel = head.channel
        if channel is None:
            return False
        attributed = False
        referrals = self.referrals
        if channel == "whatsapp":
            clid = first_value(record.get("ctwa_clid"))
            wa_account = first_value(record.get("whatsapp_business_account_id"))
            if clid is None and referrals is not None and head.event_time is not None:
                for candidate in self._whatsapp_users(record, phone):
                    found = referrals.latest_whatsapp_referral(candidate, head.event_time, self.window_seconds)
                    if found:
                        clid = found.get("ctwa_clid") or None
                        attributed = clid is not None
                        wa_account = wa_account or found.get("business_id") or None
                        break
            if clid is None:
                # A customer we can name but no ad to credit: an organic or web order, not a broken
                # row (SPEC §4); pipeline.triage decides (--require-attribution makes it an error).
                errors.append(("ctwa_clid", UNATTRIBUTED if user_data else "missing_identifier", MISSING_CLID))
            self._put_ids(user_data, "ctwa_clid", clid, "whatsapp_business_account_id", wa_account, channel, errors)
            return attributed
        user_field = "page_scoped_user_id" if channel == "messenger" else "ig_sid"
        account_field = "page_id" if channel == "messenger" else "ig_account_id"
        user = first_value(record.get(user_field))
        account: str | None = first_value(record.get(account_field))
        if user is None:
            errors.append(
                (user_field, "missing_identifier",
                 f"no {user_field}: {channel} events need the customer's {'PSID' if channel == 'messenger' else 'IGSID'}")
            )
        elif account is None and referrals is not None:
            account = referrals.account_for_user(channel, user)
            attributed = account is not None
        send_as = self.ig_field if channel == "instagram" else account_field
        self._put_ids(user_data, user_field, user, send_as, account, channel, errors, account_field)
        return attributed

    @staticmethod
    def _whatsapp_users(record: dict[str, Any], phone: str | None) -> list[str]:
        users = []
        wa_id = first_value(record.get("wa_id"))
        if wa_id is not None:
            from capi_cli.events.phones import normalize_phone

            users.append(normalize_phone(wa_id, None) or wa_id)
        if phone is not None and phone not in users:
            users.append(phone)
        bsuid = first_value(record.get("bsuid"))
        if bsuid is not None:
            users.append(bsuid)
        return users

    def _put_ids(
        self,
        user_data: dict[str, Any],
        user_field: str,
        user: str | None,
        account_key: str,
        account: str | None,
        channel: str,
        errors: Errors,
        account_field: str | None = None,
    ) -> None:
        account_field = account_field or account_key
        account = account or self.default_accounts[channel]
        if user is not None:
            if user_field != "ctwa_clid" and not user.isdigit():
                errors.append((user_field, "invalid_value", f"{user_field} {user!r} should be digits"))
            user_data[user_field] = user
        if account is None:
            setting = {"whatsapp": "CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID", "messenger": "CAPI_PAGE_ID",
                       "instagram": "CAPI_IG_ACCOUNT_ID"}[channel]
            errors.append(
                (account_field, "missing_field", f"no {account_field}: add the column or set {setting}")
            )
            return
        account = str(account).strip()
        if not account.isdigit():
            errors.append((account_field, "invalid_value", f"{account_field} {account!r} should be digits"))
        user_data[account_key] = account

    # -- custom_data ------------------------------------------------------------------------

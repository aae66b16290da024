"""Every setting capi has, in one table (SPEC §2), and the checks of their values.

The environment variables, the defaults, the keys a profile may hold, the profile model, the
order `config show` lists them in and the checks of every value are all derived from `SETTINGS`:
a new setting is one row here (plus its typed attribute on `config.Settings`).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

from capi_cli.rules import API_VERSION, CHANNELS, GRAPH_URL, IG_ACCOUNT_FIELDS, MAX_EVENTS_PER_REQUEST


@dataclass(frozen=True)
class Setting:
    name: str
    env: str | None  # its environment variable (SPEC §2), if it has one
    default: Any
    kind: str  # how a value is checked: see check_value
    help: str
    bounds: tuple[float, float] | None = None
    choices: tuple[str, ...] = ()
    secret: bool = False  # never printed: shown masked
    in_profile: bool = True  # a profile in the config file may hold it
    resolved: bool = True  # resolved by precedence (option > env > profile > default)


SETTINGS: tuple[Setting, ...] = (
    Setting("dataset_id", "CAPI_DATASET_ID", None, "id", "the dataset (pixel) id events are sent to"),
    Setting("access_token", "CAPI_ACCESS_TOKEN", None, "text", "the Conversions API access token",
            secret=True, in_profile=False, resolved=False),
    Setting("app_secret", "CAPI_APP_SECRET", None, "text", "the app secret (appsecret_proof, webhook signatures)",
            secret=True, in_profile=False),
    Setting("graph_url", "CAPI_GRAPH_URL", GRAPH_URL, "url", "the Graph API base URL"),
    Setting("api_version", "CAPI_API_VERSION", API_VERSION, "version", "the Graph API version"),
    Setting("ledger", "CAPI_LEDGER", None, "ledger", "the ledger: a SQLite path or a postgresql:// URL"),
    Setting("whatsapp_business_account_id", "CAPI_WHATSAPP_BUSINESS_ACCOUNT_ID", None, "id",
            "the WhatsApp Business Account id"),
    Setting("page_id", "CAPI_PAGE_ID", None, "id", "the Facebook Page id"),
    Setting("ig_account_id", "CAPI_IG_ACCOUNT_ID", None, "id", "the Instagram account id"),
    Setting("channel", "CAPI_CHANNEL", None, "choice", "the default channel", choices=CHANNELS),
    Setting("default_country", "CAPI_DEFAULT_COUNTRY", None, "country",
            "the country of phones written without a country code"),
    Setting("currency", "CAPI_CURRENCY", None, "currency", "the default currency"),
    Setting("timezone", "CAPI_TIMEZONE", "UTC", "timezone", "the timezone of naive timestamps"),
    Setting("locale", "CAPI_LOCALE", None, "locale", "the locale of amounts and dates in inputs"),
    Setting("partner_agent", "CAPI_PARTNER_AGENT", None, "text", "the partner_agent sent with each request"),
    Setting("batch_size", None, MAX_EVENTS_PER_REQUEST, "int", "events per request",
            bounds=(1, MAX_EVENTS_PER_REQUEST)),
    Setting("concurrency", None, 4, "int", "requests in flight", bounds=(1, 64)),
    Setting("timeout", None, 20.0, "seconds", "seconds to wait for an answer", bounds=(0, 600)),
    Setting("max_retries", None, 5, "int", "retries of a failed batch", bounds=(0, 20)),
    Setting("attribution_window_days", None, 7, "int", "days a referral attributes later events",
            bounds=(1, 28)),
    Setting("ig_account_field", None, "ig_account_id", "choice", "the key the Instagram account id is sent as",
            choices=IG_ACCOUNT_FIELDS),
    Setting("access_token_env", None, None, "text", "the environment variable holding the token",
            resolved=False),
    Setting("access_token_file", None, None, "text", "a file holding the token (0600)", resolved=False),
)

BY_NAME: dict[str, Setting] = {s.name: s for s in SETTINGS}
ENV_VARS: dict[str, str] = {s.name: s.env for s in SETTINGS if s.env}
DEFAULTS: dict[str, Any] = {s.name: s.default for s in SETTINGS if s.default is not None}
# Resolved by precedence, in the order `config show` lists them (the token is resolved apart:
# it never comes from a command-line option).
RESOLVED_SETTINGS: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.resolved)
PROFILE_KEYS: tuple[str, ...] = tuple(s.name for s in SETTINGS if s.in_profile)
SECRET_SETTINGS = frozenset(s.name for s in SETTINGS if s.secret)

_TYPES = {"int": int, "seconds": float}


def profile_model() -> Any:
    """The pydantic model of a profile: the keys it may hold, typed; anything else is an error."""
    from pydantic import ConfigDict, Field, create_model

    fields: dict[str, Any] = {}
    for s in SETTINGS:
        if not s.in_profile:
            continue
        kind = _TYPES.get(s.kind, str)
        fields[s.name] = (kind | None, Field(default=None))
    return create_model("Profile", __config__=ConfigDict(extra="forbid", strict=False), **fields)


_API_VERSION = re.compile(r"^v\d+\.\d+$")


def check_value(key: str, value: Any) -> Any:
    """Normalize and check one setting's value; ValueError says what is wrong."""
    if value is None:
        return None
    setting = BY_NAME.get(key)
    kind = setting.kind if setting else "text"
    if kind == "int":
        try:
            number = int(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a whole number, got {value!r}") from None
        assert setting is not None and setting.bounds is not None
        low, high = (int(b) for b in setting.bounds)
        if not low <= number <= high:
            raise ValueError(f"must be between {low} and {high}, got {number}")
        return number
    if kind == "seconds":
        try:
            seconds = float(str(value).strip())
        except ValueError:
            raise ValueError(f"expected a number of seconds, got {value!r}") from None
        assert setting is not None and setting.bounds is not None
        low_s, high_s = setting.bounds
        if not low_s < seconds <= high_s:
            raise ValueError(f"must be between {low_s:g} and {high_s:g} seconds, got {value}")
        return seconds
    text = str(value).strip()
    return _TEXT_CHECKS.get(kind, _text)(text, setting)


def _text(text: str, setting: Setting | None) -> str:
    return text


def _version(text: str, setting: Setting | None) -> str:
    if not _API_VERSION.match(text):
        raise ValueError(f"expected a Graph API version like {API_VERSION}, got {text!r}")
    return text


def _url(text: str, setting: Setting | None) -> str:
    if not re.match(r"^https?://[^\s/]+", text):
        raise ValueError(f"expected an http(s) URL, got {text!r}")
    return text.rstrip("/")


def _country(text: str, setting: Setting | None) -> str:
    if not re.fullmatch(r"[A-Za-z]{2}", text):
        raise ValueError(f"expected an ISO 3166-1 alpha-2 code like IN or TR, got {text!r}")
    return text.upper()


def _currency(text: str, setting: Setting | None) -> str:
    if not re.fullmatch(r"[A-Za-z]{3}", text):
        raise ValueError(f"expected an ISO 4217 code like INR or TRY, got {text!r}")
    return text.upper()


def _timezone(text: str, setting: Setting | None) -> str:
    from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

    try:
        ZoneInfo(text)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown timezone {text!r} (use an IANA name like Asia/Kolkata)") from None
    return text


def _choice(text: str, setting: Setting | None) -> str:
    assert setting is not None
    if setting.name == "channel":
        text = text.lower()
    if text not in setting.choices:
        *rest, last = setting.choices
        raise ValueError(f"expected {', '.join(rest)} or {last}, got {text!r}")
    return text


def _meta_id(text: str, setting: Setting | None) -> str:
    if not re.fullmatch(r"\d{1,32}", text):
        raise ValueError(f"expected a numeric Meta id, got {text!r}")
    return text


def _locale(text: str, setting: Setting | None) -> str:
    from capi_cli.inputs.locales import check_locale

    return check_locale(text)


_TEXT_CHECKS = {
    "version": _version,
    "url": _url,
    "country": _country,
    "currency": _currency,
    "timezone": _timezone,
    "choice": _choice,
    "id": _meta_id,
    "locale": _locale,
}

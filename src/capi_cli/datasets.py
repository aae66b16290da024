"""The dataset of a WhatsApp Business Account, Page or Instagram account: what `capi dataset` shows
and what `capi dataset --create` gets or creates.

Meta: one dataset per asset; `POST /{asset_id}/dataset` creates it, or returns the existing id when
there is one (meta-facts.md; Graph API reference "WhatsApp Business Account Dataset": returns
`{"id": numeric string}`, no read on that edge). Which permission each channel needs is Meta's
Conversions API for Business Messaging onboarding guide.
"""

from __future__ import annotations

import hashlib
import hmac
from dataclasses import dataclass
from typing import Any

from capi_cli.config import Settings
from capi_cli.errors import ConfigError, SetupError, UsageError

# channel -> (settings attribute of its asset, what the asset is, the permission to grant)
ASSETS = {
    "whatsapp": ("whatsapp_business_account_id", "WhatsApp Business Account",
                 "whatsapp_business_management (and whatsapp_business_manage_events)"),
    "messenger": ("page_id", "Page", "page_events"),
    "instagram": ("ig_account_id", "Instagram account", "instagram_manage_events"),
}
# Graph API codes that mean "the token may not do this": permission (10, 200-299), and 100
# subcode 33 (object missing or not visible to this token).
_PERMISSION_CODES = frozenset({10, *range(200, 300)})


@dataclass(frozen=True)
class AssetDataset:
    channel: str
    asset_id: str
    asset_kind: str
    permission: str
    dataset_id: str | None  # from Meta (--create) or the one configured
    configured: str | None  # the profile's dataset_id, to compare

    def to_dict(self) -> dict[str, Any]:
        return {"channel": self.channel, "asset_id": self.asset_id, "asset": self.asset_kind,
                "dataset_id": self.dataset_id, "configured_dataset_id": self.configured,
                "permission": self.permission}


def asset_of(settings: Settings, channel: str | None) -> tuple[str, str]:
    """(channel, asset id): the channel asked for, else the first configured asset."""
    channels = [channel] if channel else list(ASSETS)
    for name in channels:
        asset_id = getattr(settings, ASSETS[name][0])
        if asset_id:
            return name, asset_id
    if channel:
        raise ConfigError(f"no {ASSETS[channel][1]} id configured: `capi config set {ASSETS[channel][0]} ID`")
    raise ConfigError(
        "no WhatsApp Business Account, Page or Instagram account configured: "
        "`capi config set whatsapp_business_account_id ID` (or page_id, ig_account_id)"
    )


def configured_dataset(settings: Settings, channel: str | None) -> AssetDataset:
    name, asset_id = asset_of(settings, channel)
    _, kind, permission = ASSETS[name]
    return AssetDataset(name, asset_id, kind, permission, settings.dataset_id, settings.dataset_id)


def get_or_create(settings: Settings, channel: str | None) -> AssetDataset:
    """POST /{asset_id}/dataset: the asset's dataset id, created if it had none."""
    import httpx

    name, asset_id = asset_of(settings, channel)
    _, kind, permission = ASSETS[name]
    token = settings.access_token
    if not token:
        raise ConfigError("no access token: set CAPI_ACCESS_TOKEN, or run `capi config init`")
    params: dict[str, str] = {}
    if settings.app_secret:
        params["appsecret_proof"] = hmac.new(settings.app_secret.encode(), token.encode(), hashlib.sha256).hexdigest()
    url = f"{settings.graph_url}/{settings.api_version}/{asset_id}/dataset"
    try:
        response = httpx.post(url, params=params, headers={"Authorization": f"Bearer {token}"},
                              timeout=settings.timeout)
        body = response.json() if response.content else {}
    except httpx.HTTPError as exc:
        raise SetupError(f"Graph API: cannot reach {settings.graph_url}: {type(exc).__name__}") from None
    except ValueError:
        body = {}
    if response.is_success and isinstance(body, dict) and str(body.get("id", "")).isdigit():
        return AssetDataset(name, asset_id, kind, permission, str(body["id"]), settings.dataset_id)
    raise _refusal(response.status_code, body, kind, asset_id, permission, token)


def _refusal(status: int, body: Any, kind: str, asset_id: str, permission: str, token: str) -> SetupError:
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        return SetupError(f"Graph API: HTTP {status} without an answer for {kind} {asset_id}")
    code, subcode = error.get("code"), error.get("error_subcode")
    message = str(error.get("message", "")).replace(token, "***")
    shown = f"code {code}" + (f"/{subcode}" if subcode is not None else "") + f": {message}"
    if code == 190:
        return SetupError(f"Graph API: the access token was refused ({shown}); renew it (`capi config init`)")
    if code in _PERMISSION_CODES or (code == 100 and subcode == 33):
        return SetupError(
            f"Graph API: {shown}. The token cannot manage the dataset of {kind} {asset_id}: "
            f"grant the app the {permission} permission on it, and check the id"
        )
    return SetupError(f"Graph API: {kind} {asset_id}: {shown}")


def check_channel(channel: str | None) -> str | None:
    if channel is not None and channel not in ASSETS:
        raise UsageError(f"--channel: expected whatsapp, messenger or instagram, got {channel!r}")
    return channel

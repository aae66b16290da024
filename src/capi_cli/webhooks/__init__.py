"""Reading webhook dumps and extracting the ad referral of each conversation (SPEC §3).

from capi_cli.webhooks import ExtractStats, Referral, Unreadable, extract
stats = ExtractStats()
for item in extract(["dumps/"], app_secret=None, channel=None, stats=stats):
    ...  # Referral (item.to_dict() has the §3 keys) or Unreadable (str(item) is "file:line: reason")
"""

from capi_cli.webhooks.extraction import CHANNELS, extract
from capi_cli.webhooks.model import REFERRAL_KEYS, ExtractStats, Referral, Unreadable, Unrecognised

__all__ = ["CHANNELS", "REFERRAL_KEYS", "ExtractStats", "Referral", "Unreadable", "Unrecognised", "extract"]

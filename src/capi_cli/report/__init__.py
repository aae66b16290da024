"""`capi report`: which ads start conversations that convert, and how good the data sent is.

`queries` reads the ledger in portable SQL; `build` adds the figures up (SPEC §10); `html` writes
the self-contained page with charts (the optional extra `capi-cli[report]`).
"""

from capi_cli.report.build import GROUP_KEYS, GROUPINGS, METRIC_KEYS, Report, build_report
from capi_cli.report.queries import Period, ReportSource

# What to add to the input when few sent events carry a key (the coverage table's hints).
MATCH_KEY_HINTS: dict[str, str] = {
    "em": "an email column (email)",
    "ph": "a phone column (phone, or wa_id on WhatsApp)",
    "fn": "a first name column (first_name, or a full name column)",
    "ln": "a last name column (last_name, or a full name column)",
    "ge": "a gender column",
    "db": "a date of birth column",
    "ct": "a city column",
    "st": "a state column",
    "zp": "a zip / postal code column",
    "country": "a country column",
    "external_id": "your customer id (external_id)",
}

__all__ = ["GROUPINGS", "GROUP_KEYS", "MATCH_KEY_HINTS", "METRIC_KEYS", "Period", "Report", "ReportSource",
           "build_report"]

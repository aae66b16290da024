"""Meta's facts and rules that capi depends on, as data: the Graph API, business-messaging events.

Sources: Meta's Conversions API for Business Messaging documentation (event list, per-channel
`user_data`, 7-day limit), the customer-information parameters reference (hashed fields and their
normalization), and Meta's official Python Business SDK (`facebook_business.adobjects.serverside`).
See ../shared/reference/meta-facts.md. A change at Meta should be a one-line change here.
"""

from __future__ import annotations

# The Graph API (meta-facts.md, "Conversions API, business messaging"). The default version follows
# Meta's current Business SDK (facebook-business 26.0.3 uses v26.0).
GRAPH_URL = "https://graph.facebook.com"
API_VERSION = "v26.0"
MAX_EVENTS_PER_REQUEST = 1000  # at most 1,000 events per request

ACTION_SOURCE = "business_messaging"

# The 14 events Meta accepts for business messaging; others are refused with subcode 2804066
# (seen in integrations). Matched case-insensitively, sent in this spelling.
EVENT_NAMES: tuple[str, ...] = (
    "Purchase",
    "LeadSubmitted",
    "InitiateCheckout",
    "AddToCart",
    "ViewContent",
    "OrderCreated",
    "OrderShipped",
    "OrderDelivered",
    "OrderCanceled",
    "OrderReturned",
    "CartAbandoned",
    "QualifiedLead",
    "RatingProvided",
    "ReviewProvided",
)
EVENT_NAME_BY_LOWER: dict[str, str] = {name.lower(): name for name in EVENT_NAMES}

CHANNELS: tuple[str, ...] = ("whatsapp", "messenger", "instagram")

# Per-channel ids Meta requires in user_data (Meta's business-messaging samples). The instagram
# account id's key is configurable (settings.ig_account_field): Meta's pages use both names.
REQUIRED_IDS: dict[str, tuple[str, str]] = {
    # channel: (the user's click/scoped id, the business account id)
    "whatsapp": ("ctwa_clid", "whatsapp_business_account_id"),
    "messenger": ("page_scoped_user_id", "page_id"),
    "instagram": ("ig_sid", "ig_account_id"),
}
IG_ACCOUNT_FIELDS: tuple[str, ...] = ("ig_account_id", "instagram_business_account_id")

# Messaging identifiers: sent as they are, never hashed.
MESSAGING_ID_FIELDS: tuple[str, ...] = (
    "ctwa_clid",
    "whatsapp_business_account_id",
    "page_id",
    "page_scoped_user_id",
    "ig_account_id",
    "ig_sid",
)

# Customer-information fields hashed with SHA-256 after normalization, in the order they are sent.
HASHED_FIELDS: tuple[str, ...] = (
    "em",
    "ph",
    "fn",
    "ln",
    "ge",
    "db",
    "ct",
    "st",
    "zp",
    "country",
    "external_id",
)

# user_data fields Meta takes unhashed (customer-information reference).
UNHASHED_USER_DATA: tuple[str, ...] = (
    "client_ip_address",
    "client_user_agent",
    "fbc",
    "fbp",
    "subscription_id",
    "fb_login_id",
    "lead_id",
)

# custom_data standard parameters (Conversions API custom_data reference).
CUSTOM_DATA_FIELDS: tuple[str, ...] = (
    "value",
    "currency",
    "order_id",
    "content_ids",
    "contents",
    "content_type",
    "content_name",
    "content_category",
    "num_items",
    "predicted_ltv",
    "delivery_category",
)
DELIVERY_CATEGORIES: frozenset[str] = frozenset({"in_store", "curbside", "home_delivery"})

# Events Meta refuses without value and currency (2804081 currency missing, seen in integrations).
VALUE_REQUIRED_EVENTS: frozenset[str] = frozenset({"Purchase"})

# Top-level event keys passed through as given (server-event parameters reference).
PASSTHROUGH_EVENT_FIELDS: tuple[str, ...] = (
    "opt_out",
    "data_processing_options",
    "data_processing_options_country",
    "data_processing_options_state",
)

# An event older than 7 days makes Meta refuse the whole request.
MAX_EVENT_AGE_SECONDS = 7 * 24 * 3600
# Ours, not Meta's: an event this close to the 7-day edge may cross it before the batch arrives.
EVENT_AGE_MARGIN_SECONDS = 300
# Ours: Meta documents no limit for future times; allow clock skew between systems.
MAX_FUTURE_SKEW_SECONDS = 600

# Meta: `ge` is `f` or `m`. The words we accept for each (ours, several languages).
# Meta's lead-form exports write values with a type prefix: `p:+15551234567`, `e:`, `z:` (seen in
# the CSV files Ads Manager downloads for Instant Forms).
LEAD_EXPORT_PREFIXES = ("p:", "e:", "z:")

GENDER_WORDS: dict[str, str] = {
    **dict.fromkeys(
        ("f", "female", "woman", "women", "w", "girl", "fem", "feminine", "frau", "weiblich",
         "femme", "féminin", "femenino", "mujer", "feminino", "mulher", "donna", "femmina", "kadın",
         # the target markets' own words and form letters: Indonesian (perempuan/wanita, P), Turkish
         # (Kadın, K), Hindi, Arabic, Portuguese abbreviations
         "perempuan", "wanita", "p", "k", "kadin", "महिला", "स्त्री", "mahila", "أنثى", "انثى", "fem.", "feminina"),
        "f",
    ),
    **dict.fromkeys(
        ("m", "male", "man", "men", "boy", "masculine", "mann", "männlich", "homme", "masculin",
         "masculino", "hombre", "homem", "uomo", "maschio", "erkek",
         "laki-laki", "laki laki", "lakilaki", "pria", "l", "e", "पुरुष", "purush", "ذكر", "masc.", "masc"),
        "m",
    ),
}

# Country names people write that ISO 3166 does not list under that name.
COUNTRY_ALIASES: dict[str, str] = {
    "uk": "gb",
    "unitedkingdom": "gb",
    "greatbritain": "gb",
    "england": "gb",
    "scotland": "gb",
    "wales": "gb",
    "northernireland": "gb",
    "usa": "us",
    "unitedstates": "us",
    "unitedstatesofamerica": "us",
    "america": "us",
    "russia": "ru",
    "southkorea": "kr",
    "korea": "kr",
    "northkorea": "kp",
    "vietnam": "vn",
    "laos": "la",
    "iran": "ir",
    "syria": "sy",
    "bolivia": "bo",
    "venezuela": "ve",
    "tanzania": "tz",
    "moldova": "md",
    "turkey": "tr",
    "türkiye": "tr",
    "turkiye": "tr",
    "uae": "ae",
    "emirates": "ae",
    "ivorycoast": "ci",
    "czechia": "cz",
    "czechrepublic": "cz",
    "holland": "nl",
    "macedonia": "mk",
    "palestine": "ps",
    "taiwan": "tw",
    "brunei": "bn",
    "capeverde": "cv",
    "congo": "cg",
    "drc": "cd",
    "kosovo": "xk",
}

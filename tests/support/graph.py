"""Fixtures for tests that talk to the Graph API stand-in. Import them into a test module:

    from graph_fixtures import graph, make_client  # noqa: F401
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest

from capi_cli.delivery.graph import GraphClient
from capi_cli.sandbox.server import GraphStandin

TOKEN = "EAAG-secret-token-abc123"
APP_SECRET = "app-secret-xyz789"
DATASET = "1234567890"


@pytest.fixture
def graph() -> Iterator[GraphStandin]:
    with GraphStandin(token=TOKEN, datasets={DATASET}) as standin:
        yield standin


@pytest.fixture
def make_client(graph: GraphStandin) -> Iterator[Callable[..., GraphClient]]:
    clients: list[GraphClient] = []

    def factory(**kwargs: Any) -> GraphClient:
        kwargs.setdefault("graph_url", graph.url)
        kwargs.setdefault("timeout", 0.5)
        token = kwargs.pop("token", TOKEN)
        client = GraphClient(token, **kwargs)
        clients.append(client)
        return client

    yield factory
    for client in clients:
        client.close()


def sha(value: str) -> str:
    import hashlib

    return hashlib.sha256(value.encode()).hexdigest()


def payload(event_id: str, *, event_name: str = "Purchase", event_time: int | None = None,
            channel: str = "whatsapp") -> dict[str, Any]:
    """A valid business-messaging event as Meta documents it."""
    import time

    user: dict[str, Any] = {"em": [sha(f"{event_id}@example.com")], "ph": [sha("905321234567")]}
    if channel == "whatsapp":
        user.update(ctwa_clid=f"ARAk{event_id}xyz", whatsapp_business_account_id="104996")
    elif channel == "messenger":
        user.update(page_id="1122", page_scoped_user_id=f"psid{event_id}")
    else:
        user.update(ig_sid=f"igsid{event_id}", ig_account_id="7788")
    return {
        "event_name": event_name,
        "event_time": int(time.time()) - 60 if event_time is None else event_time,
        "event_id": event_id,
        "action_source": "business_messaging",
        "messaging_channel": channel,
        "user_data": user,
        "custom_data": {"currency": "USD", "value": 10.5},
    }

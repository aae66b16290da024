"""The Graph API client: one connection pool, the token only in the `Authorization` header and
masked out of every message. What Meta's answers mean is `delivery.answers`."""

from __future__ import annotations

import hashlib
import hmac
import json
import threading
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from capi_cli.delivery.answers import (
    ERROR_CODES,
    DatasetCheck,
    Outcome,
    OutcomeKind,
    classify_exception,
    classify_response,
    retry_hint,
)
from capi_cli.errors import SetupError
from capi_cli.rules import API_VERSION, GRAPH_URL, MAX_EVENTS_PER_REQUEST

__all__ = [
    "ERROR_CODES",
    "DatasetCheck",
    "GraphClient",
    "Outcome",
    "OutcomeKind",
    "classify_exception",
    "classify_response",
    "retry_hint",
]

if TYPE_CHECKING:
    import httpx

    from capi_cli.config import Settings



# -- the client ---------------------------------------------------------------------------------------


class GraphClient:
    """Thread-safe Graph API client with a connection pool. Use as a context manager or close()."""

    def __init__(
        self,
        access_token: str,
        *,
        graph_url: str = GRAPH_URL,
        api_version: str = API_VERSION,
        app_secret: str | None = None,
        timeout: float = 20.0,
        connect_timeout: float | None = None,
        partner_agent: str | None = None,
        test_event_code: str | None = None,
        max_connections: int = 16,
    ) -> None:
        if not access_token:
            raise SetupError("no access token: set CAPI_ACCESS_TOKEN")
        self._token = access_token
        self._secrets = [s for s in (access_token, app_secret) if s]
        self.graph_url = graph_url.rstrip("/")
        self.api_version = api_version.strip("/")
        self.partner_agent = partner_agent
        self.test_event_code = test_event_code
        self.timeout = timeout
        self._proof = (
            hmac.new(app_secret.encode(), access_token.encode(), hashlib.sha256).hexdigest()
            if app_secret
            else None
        )
        self._connect_timeout = min(timeout, 10.0) if connect_timeout is None else connect_timeout
        self._max_connections = max_connections
        self._client: httpx.Client | None = None
        self._client_lock = threading.Lock()

    @property
    def _http(self) -> httpx.Client:
        """The HTTP client, made on the first request: a run that sends nothing (every event
        already sent) does not pay for httpx and its TLS setup."""
        if self._client is None:
            with self._client_lock:
                if self._client is None:
                    import httpx

                    self._client = httpx.Client(
                        timeout=httpx.Timeout(self.timeout, connect=self._connect_timeout),
                        limits=httpx.Limits(max_connections=self._max_connections,
                                            max_keepalive_connections=self._max_connections),
                        headers={"User-Agent": "capi-cli"},
                        follow_redirects=False,
                    )
        return self._client

    @classmethod
    def from_settings(
        cls, settings: Settings, *, test_event_code: str | None = None, max_connections: int | None = None
    ) -> GraphClient:
        settings.require_send()
        assert settings.access_token is not None
        return cls(
            settings.access_token,
            graph_url=settings.graph_url,
            api_version=settings.api_version,
            app_secret=settings.app_secret,
            timeout=settings.timeout,
            partner_agent=settings.partner_agent,
            test_event_code=test_event_code,
            max_connections=max_connections or max(16, settings.concurrency),
        )

    def __repr__(self) -> str:
        return f"GraphClient(graph_url={self.graph_url!r}, api_version={self.api_version!r}, token=***)"

    def close(self) -> None:
        if self._client is not None:
            self._client.close()

    def __enter__(self) -> GraphClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _mask(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, "***")
        return text

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self._token}"}

    def _masked(self, outcome: Outcome) -> Outcome:
        masked = self._mask(outcome.message)
        if masked == outcome.message:
            return outcome
        return Outcome(
            outcome.kind,
            outcome.status,
            outcome.events_received,
            outcome.code,
            outcome.subcode,
            masked,
            outcome.fbtrace_id,
            outcome.retry_after,
        )

    def events_url(self, dataset_id: str) -> str:
        return f"{self.graph_url}/{self.api_version}/{dataset_id}/events"

    def request_body(self, events: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"data": list(events)}
        if self.test_event_code:
            body["test_event_code"] = self.test_event_code
        if self.partner_agent:
            body["partner_agent"] = self.partner_agent
        if self._proof:
            body["appsecret_proof"] = self._proof
        return body

    def send_events(self, dataset_id: str, events: Sequence[Mapping[str, Any]]) -> Outcome:
        """POST one batch. Never raises for network or Meta errors: everything becomes an Outcome."""
        if not events:
            return Outcome(OutcomeKind.SUCCESS, events_received=0)
        if len(events) > MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
        content = json.dumps(self.request_body(events), ensure_ascii=False, separators=(",", ":")).encode()
        return self._post_events(dataset_id, content, len(events))

    def send_events_json(self, dataset_id: str, texts: Sequence[str]) -> Outcome:
        """send_events for events already serialized (each as compact JSON, as the events pipeline
        writes them): the same request body byte for byte, without decoding and encoding again."""
        if not texts:
            return Outcome(OutcomeKind.SUCCESS, events_received=0)
        if len(texts) > MAX_EVENTS_PER_REQUEST:
            raise ValueError(f"at most {MAX_EVENTS_PER_REQUEST} events per request")
        rest = self.request_body(())
        del rest["data"]
        tail = "," + json.dumps(rest, ensure_ascii=False, separators=(",", ":"))[1:] if rest else "}"
        content = ('{"data":[' + ",".join(texts) + "]" + tail).encode()
        return self._post_events(dataset_id, content, len(texts))

    def _post_events(self, dataset_id: str, content: bytes, count: int) -> Outcome:
        import httpx

        headers = {**self._headers(), "Content-Type": "application/json"}
        try:
            response = self._http.post(self.events_url(dataset_id), content=content, headers=headers)
        except httpx.HTTPError as exc:
            return self._masked(classify_exception(exc))
        return self._masked(classify_response(response.status_code, response.headers, response.content, count))

    def check_dataset(self, dataset_id: str) -> DatasetCheck:
        """GET the dataset (for `capi doctor`): ok, or the SetupError that says what to fix."""
        import httpx

        params = {"fields": "id,name"}
        if self._proof:
            params["appsecret_proof"] = self._proof
        url = f"{self.graph_url}/{self.api_version}/{dataset_id}"
        try:
            response = self._http.get(url, params=params, headers=self._headers())
        except httpx.HTTPError as exc:
            outcome = self._masked(classify_exception(exc))
            return DatasetCheck(
                dataset_id,
                False,
                error=SetupError(f"Graph API: cannot reach {self.graph_url}: {outcome.message}"),
            )
        outcome = self._masked(
            classify_response(response.status_code, response.headers, response.content, None)
        )
        if outcome.ok:
            try:
                body = response.json()
            except ValueError:
                body = {}
            name = body.get("name") if isinstance(body, dict) else None
            return DatasetCheck(dataset_id, True, name=name if isinstance(name, str) else None)
        if outcome.kind is OutcomeKind.REFUSED and outcome.code == 100:
            # On a GET of the object itself, an invalid parameter means the id is not a dataset.
            return DatasetCheck(
                dataset_id,
                False,
                error=SetupError(
                    f"dataset {dataset_id}: not a dataset the token can use ({outcome.describe()})"
                ),
            )
        return DatasetCheck(
            dataset_id, False, error=SetupError(f"dataset {dataset_id}: {outcome.describe()}")
        )

"""Pre-flight: before a job ingests and scores anything, each provider it will use answers.

One cheap request per provider: ``GET {base_url}/models`` with the API key (on an
``anthropic`` provider ``GET {base_url}/v1/models`` with ``x-api-key`` and
``anthropic-version``, the Models API of the Messages API). A missing key
variable, a rejected key (401/403) or an endpoint that cannot be reached (connection
refused, DNS, timeout) stops the job with one line naming the provider and why
(:class:`~jobs.errors.ProviderError`). Any other answer means the endpoint is there: 404 and
405 (a server without a models list), 429 and 5xx (busy now; the calls retry) pass.
"""

from __future__ import annotations

import logging
import os
from urllib.parse import urlsplit

import httpx

from jobs.config import AppConfig, ProviderConfig
from jobs.errors import ProviderError
from jobs.providers import anthropic
from jobs.providers.redact import redact

log = logging.getLogger("jobs.providers")

PREFLIGHT_TIMEOUT_S = 10.0
"""At most this long per provider (less when the provider's own ``timeout_s`` is shorter)."""


def preflight(config: AppConfig, models: list[str], base_urls: dict[str, str]) -> None:
    """Check every provider that a call to one of ``models`` (or their fallbacks) may reach.

    ``base_urls`` overrides provider URLs as for :class:`~jobs.providers.ProviderPool` (the
    simulated providers started for the run). Raises :class:`ProviderError` with one line for
    all the providers that failed; returns None when every one answered.
    """
    providers: dict[str, None] = {}
    for m in config.models_with_fallbacks(models):
        providers[config.model(m).provider] = None
    problems = []
    for name in providers:
        prov = config.providers[name]
        problem = check_provider(name, prov, base_urls.get(name) or prov.base_url)
        if problem is not None:
            problems.append(problem)
    if problems:
        raise ProviderError("pre-flight failed: " + "; ".join(problems))


def _origin(url: str) -> str:
    parts = urlsplit(url)
    return f"{parts.scheme}://{parts.hostname}" + (f":{parts.port}" if parts.port else "")


def check_provider(name: str, prov: ProviderConfig, base_url: str) -> str | None:
    """Why provider ``name`` cannot be used (one phrase naming it), or None."""
    key: str | None = None
    if prov.api_key_env:
        key = os.environ.get(prov.api_key_env)
        if key is None:
            return f"provider {name!r}: environment variable {prov.api_key_env} (its API key) is not set"
        if not key.strip():
            return f"provider {name!r}: environment variable {prov.api_key_env} (its API key) is empty"
        if any(c in key for c in "\r\n\x00") or key != key.strip():
            return f"provider {name!r}: the API key in {prov.api_key_env} has a line break or surrounding spaces"
    if not base_url:
        return f"provider {name!r}: no base_url (a simulated provider must be started first)"
    if prov.kind == "anthropic":
        url = anthropic.endpoint(base_url, anthropic.MODELS_PATH)
        headers = anthropic.headers(key)
    else:
        url = base_url.rstrip("/") + "/models"
        headers = {"authorization": f"Bearer {key}"} if key else {}
    timeout = min(prov.timeout_s, PREFLIGHT_TIMEOUT_S)
    where = _origin(base_url)
    try:
        with httpx.Client(timeout=timeout, trust_env=True, follow_redirects=False) as client:
            resp = client.get(url, headers=headers)
    except httpx.TimeoutException:
        return f"provider {name!r}: {where} did not answer within {timeout:g} s"
    except httpx.HTTPError as exc:
        reason = redact(str(exc), [key], limit=200) or type(exc).__name__
        return f"provider {name!r}: cannot reach {where} ({reason})"
    if resp.status_code in (401, 403):
        detail = redact(_message(resp), [key], limit=200)
        who = f"the API key in {prov.api_key_env}" if prov.api_key_env else "a request without an API key (no api_key_env)"
        return f"provider {name!r}: {who} was refused (HTTP {resp.status_code}{': ' + detail if detail else ''})"
    if resp.status_code >= 429 or resp.status_code == 408:
        log.warning("pre-flight: provider %r answered HTTP %d on %s/models; going on", name, resp.status_code, where)
    return None


def _message(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text[:200].strip()
    if isinstance(body, dict):
        err = body.get("error")
        if isinstance(err, dict) and err.get("message"):
            return str(err["message"])
        if isinstance(err, str):
            return err
        if body.get("message"):
            return str(body["message"])
    return ""

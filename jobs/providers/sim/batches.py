"""The simulator's provider batch APIs: OpenAI ``/v1/files`` + ``/v1/batches`` and
Anthropic ``/v1/messages/batches``, in memory, driven by a clock.

Batch dispatch (issue 14) must be testable without paying for it: upload, create, poll,
cancel, list, expiry, partial failures and the output and error files, with a configurable
time to complete. A batch's requests are answered by the simulator's own synchronous
endpoint (``SimulatedApp.handle``), so answers, faults and usage are exactly what a
synchronous run of the same items would get; only the timing differs. The state is a pure
function of the clock: nothing runs in the background, a retrieve computes where the batch
is by now (validating -> in_progress -> finalizing -> completed, or expired, cancelled).
"""

from __future__ import annotations

import email.parser
import email.policy
import hashlib
import json
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

OPENAI_MAX_REQUESTS = 50_000
OPENAI_MAX_FILE_BYTES = 200 * 1024 * 1024
ANTHROPIC_MAX_REQUESTS = 100_000
ANTHROPIC_MAX_BYTES = 256 * 1024 * 1024
OPENAI_ENDPOINTS = ("/v1/chat/completions",)
VALIDATING_S = 0.05  # how long a new OpenAI batch stays ``validating`` (at most a tenth of the run)


@dataclass
class Answer:
    """One request's answer from the synchronous endpoint."""

    status: int
    body: bytes
    request_id: str | None = None


Complete = Callable[[str, dict[str, str], bytes], Answer]
"""(path, headers, body) -> the synchronous endpoint's answer (no delay applied)."""


@dataclass
class _Request:
    custom_id: str
    url: str
    body: bytes


@dataclass
class _Batch:
    id: str
    kind: str  # "openai" | "anthropic"
    requests: list[_Request]
    created_at: float
    headers: dict[str, str]
    input_file_id: str | None = None
    endpoint: str = "/v1/chat/completions"
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    errors: list[dict] | None = None  # OpenAI validation errors: the batch failed
    cancel_at: float | None = None
    results: list[tuple[_Request, Answer | None, str]] | None = None  # (request, answer, outcome), once ended
    output_file_id: str | None = None
    error_file_id: str | None = None
    ended_at: float | None = None
    end_state: str | None = None


@dataclass
class _File:
    id: str
    content: bytes
    filename: str
    purpose: str
    created_at: float


@dataclass
class SimBatches:
    """In-memory batch APIs over ``complete``; ``complete_after_s`` is how long a batch takes,
    ``expire_after_s`` (when shorter) makes it expire part-way."""

    complete: Complete
    complete_after_s: float = 1.0
    expire_after_s: float | None = None
    clock: Callable[[], float] = time.time
    files: dict[str, _File] = field(default_factory=dict)
    batches: dict[str, _Batch] = field(default_factory=dict)
    uploads: dict[str, int] = field(default_factory=dict)
    """How many times each request body (by hash) was accepted in a batch: the chaos tests'
    "no request uploaded twice" (``GET /_sim/stats``)."""

    def count_uploads(self, requests: list[_Request]) -> None:
        for r in requests:
            key = hashlib.sha256(r.body).hexdigest()
            self.uploads[key] = self.uploads.get(key, 0) + 1

    def stats(self) -> dict[str, Any]:
        counts = list(self.uploads.values())
        return {
            "batches": len(self.batches),
            "batch_requests_uploaded": sum(counts),
            "distinct_requests_uploaded": len(counts),
            "requests_uploaded_twice": sum(1 for c in counts if c > 1),
        }

    # -- routing ------------------------------------------------------------------------
    def handle(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any] | None:
        """(status, JSON-able body or raw bytes) for a batch-API path, None for any other path."""
        path, _, query = path.partition("?")
        parts = [p for p in path.split("/") if p]
        if parts[:1] == ["v1"]:
            parts = parts[1:]
        params = dict(p.split("=", 1) for p in query.split("&") if "=" in p)
        if parts[:2] == ["messages", "batches"]:
            return self._anthropic(method, parts[2:], headers, body, params)
        if parts[:1] == ["files"]:
            return self._files(method, parts[1:], headers, body)
        if parts[:1] == ["batches"]:
            return self._openai(method, parts[1:], headers, body, params)
        return None

    # -- OpenAI files ---------------------------------------------------------------------
    def _files(self, method: str, rest: list[str], headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        if not rest and method == "POST":
            try:
                form = _multipart(headers.get("content-type", ""), body)
            except ValueError as exc:
                return _oa_error(400, str(exc))
            content, filename = form.get("file", (b"", ""))
            purpose = form.get("purpose", (b"", ""))[0].decode()
            if purpose != "batch":
                return _oa_error(400, "purpose must be 'batch'")
            if len(content) > OPENAI_MAX_FILE_BYTES:
                return _oa_error(413, f"file larger than {OPENAI_MAX_FILE_BYTES} bytes")
            new = _File(f"file-{uuid.uuid4().hex[:24]}", content, filename or "batch.jsonl", purpose, self.clock())
            self.files[new.id] = new
            return 200, _file_object(new)
        f = self.files.get(rest[0]) if rest else None
        if f is None:
            return _oa_error(404, f"no such file: {rest[0] if rest else ''}")
        if len(rest) == 1 and method == "GET":
            return 200, _file_object(f)
        if len(rest) == 1 and method == "DELETE":
            del self.files[f.id]
            return 200, {"id": f.id, "object": "file", "deleted": True}
        if rest[1:] == ["content"] and method == "GET":
            return 200, f.content
        return _oa_error(404, "no such route")

    # -- OpenAI batches -------------------------------------------------------------------
    def _openai(
        self, method: str, rest: list[str], headers: dict[str, str], body: bytes, params: dict[str, str]
    ) -> tuple[int, Any]:
        if not rest and method == "POST":
            return self._openai_create(headers, body)
        if not rest and method == "GET":
            listed = [b for b in self.batches.values() if b.kind == "openai"]
            listed.sort(key=lambda b: b.created_at, reverse=True)
            page, more = _page(listed, params.get("after"), int(params.get("limit", "20")))
            data = [self._openai_object(b) for b in page]
            return 200, {
                "object": "list",
                "data": data,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
                "has_more": more,
            }
        batch = self.batches.get(rest[0])
        if batch is None or batch.kind != "openai":
            return _oa_error(404, f"no such batch: {rest[0]}")
        if len(rest) == 1 and method == "GET":
            return 200, self._openai_object(batch)
        if rest[1:] == ["cancel"] and method == "POST":
            if self._state(batch) in ("validating", "in_progress", "finalizing"):
                batch.cancel_at = self.clock()
            return 200, self._openai_object(batch)
        return _oa_error(404, "no such route")

    def _openai_create(self, headers: dict[str, str], body: bytes) -> tuple[int, Any]:
        try:
            req = json.loads(body)
            input_file_id, endpoint = req["input_file_id"], req["endpoint"]
            window = req.get("completion_window", "24h")
            metadata = req.get("metadata")
        except (ValueError, KeyError, TypeError):
            return _oa_error(400, "body must be JSON with input_file_id and endpoint")
        if endpoint not in OPENAI_ENDPOINTS:
            return _oa_error(400, f"endpoint {endpoint!r} is not supported")
        if window != "24h":
            return _oa_error(400, "completion_window must be '24h'")
        if metadata is not None and (
            not isinstance(metadata, dict) or len(metadata) > 16 or not all(isinstance(v, str) for v in metadata.values())
        ):
            return _oa_error(400, "metadata: at most 16 string values")
        f = self.files.get(input_file_id)
        if f is None:
            return _oa_error(404, f"no such file: {input_file_id}")
        requests, errors = _parse_openai_input(f.content, endpoint)
        batch = _Batch(
            id=f"batch_{uuid.uuid4().hex[:24]}",
            kind="openai",
            requests=requests,
            created_at=self.clock(),
            headers=_forwarded(headers),
            input_file_id=input_file_id,
            endpoint=endpoint,
            completion_window=window,
            metadata=metadata,
            errors=errors or None,
        )
        self.batches[batch.id] = batch
        if not errors:
            self.count_uploads(requests)
        return 200, self._openai_object(batch)

    def _openai_object(self, b: _Batch) -> dict[str, Any]:
        state = self._state(b)
        ts = int(b.created_at)
        done = b.results or []
        ok = sum(1 for _, a, o in done if o == "succeeded")
        out: dict[str, Any] = {
            "id": b.id,
            "object": "batch",
            "endpoint": b.endpoint,
            "errors": {"object": "list", "data": b.errors} if b.errors else None,
            "input_file_id": b.input_file_id,
            "completion_window": b.completion_window,
            "status": state,
            "output_file_id": b.output_file_id,
            "error_file_id": b.error_file_id,
            "created_at": ts,
            "in_progress_at": int(b.created_at + self._validating_s()) if state != "validating" and not b.errors else None,
            "expires_at": ts + 24 * 3600,
            "finalizing_at": int(b.ended_at) if b.ended_at and b.end_state == "completed" else None,
            "completed_at": int(b.ended_at) if b.end_state == "completed" and b.ended_at else None,
            "failed_at": ts if b.errors else None,
            "expired_at": int(b.ended_at) if b.end_state == "expired" and b.ended_at else None,
            "cancelling_at": int(b.cancel_at) if b.cancel_at else None,
            "cancelled_at": int(b.ended_at) if b.end_state == "cancelled" and b.ended_at else None,
            "request_counts": {"total": len(b.requests), "completed": ok, "failed": len(done) - ok if done else 0},
            "metadata": b.metadata,
        }
        return out

    # -- Anthropic message batches ----------------------------------------------------------
    def _anthropic(
        self, method: str, rest: list[str], headers: dict[str, str], body: bytes, params: dict[str, str]
    ) -> tuple[int, Any]:
        if not rest and method == "POST":
            if len(body) > ANTHROPIC_MAX_BYTES:
                return _an_error(413, "request_too_large", f"batch larger than {ANTHROPIC_MAX_BYTES} bytes")
            try:
                raw = json.loads(body)["requests"]
                requests = [_Request(str(r["custom_id"]), "/v1/messages", json.dumps(r["params"]).encode()) for r in raw]
            except (ValueError, KeyError, TypeError):
                return _an_error(400, "invalid_request_error", "body must be JSON with requests[{custom_id, params}]")
            if not requests or len(requests) > ANTHROPIC_MAX_REQUESTS:
                return _an_error(400, "invalid_request_error", f"a batch holds 1 to {ANTHROPIC_MAX_REQUESTS} requests")
            if len({r.custom_id for r in requests}) != len(requests):
                return _an_error(400, "invalid_request_error", "custom_id values must be unique within a batch")
            created = _Batch(f"msgbatch_{uuid.uuid4().hex[:24]}", "anthropic", requests, self.clock(), _forwarded(headers))
            self.batches[created.id] = created
            self.count_uploads(requests)
            return 200, self._anthropic_object(created)
        if not rest and method == "GET":
            listed = sorted((b for b in self.batches.values() if b.kind == "anthropic"), key=lambda b: -b.created_at)
            page, more = _page(listed, params.get("after_id"), int(params.get("limit", "20")))
            data = [self._anthropic_object(b) for b in page]
            return 200, {
                "data": data,
                "has_more": more,
                "first_id": data[0]["id"] if data else None,
                "last_id": data[-1]["id"] if data else None,
            }
        batch = self.batches.get(rest[0])
        if batch is None or batch.kind != "anthropic":
            return _an_error(404, "not_found_error", f"no such message batch: {rest[0]}")
        if len(rest) == 1 and method == "GET":
            return 200, self._anthropic_object(batch)
        if rest[1:] == ["cancel"] and method == "POST":
            if self._state(batch) == "in_progress":
                batch.cancel_at = self.clock()
            return 200, self._anthropic_object(batch)
        if rest[1:] == ["results"] and method == "GET":
            if self._state(batch) != "ended":
                return _an_error(400, "invalid_request_error", "results are available once the batch has ended")
            return 200, self._anthropic_results(batch)
        return _an_error(404, "not_found_error", "no such route")

    def _anthropic_object(self, b: _Batch) -> dict[str, Any]:
        state = self._state(b)
        counts = {"processing": 0, "succeeded": 0, "errored": 0, "canceled": 0, "expired": 0}
        if b.results is None:
            counts["processing"] = len(b.requests)
        else:
            for _, _, outcome in b.results:
                counts[{"failed": "errored", "cancelled": "canceled"}.get(outcome, outcome)] += 1
        return {
            "id": b.id,
            "type": "message_batch",
            "processing_status": "canceling" if state == "cancelling" else state,
            "request_counts": counts,
            "ended_at": _iso(b.ended_at) if b.ended_at else None,
            "created_at": _iso(b.created_at),
            "expires_at": _iso(b.created_at + 24 * 3600),
            "archived_at": None,
            "cancel_initiated_at": _iso(b.cancel_at) if b.cancel_at else None,
            "results_url": f"/v1/messages/batches/{b.id}/results" if state == "ended" else None,
        }

    def _anthropic_results(self, b: _Batch) -> bytes:
        lines: list[dict[str, Any]] = []
        for req, answer, outcome in b.results or []:
            if outcome == "succeeded" and answer is not None:
                result: dict[str, Any] = {"type": "succeeded", "message": json.loads(answer.body)}
            elif outcome == "failed" and answer is not None:
                result = {"type": "errored", "error": _json_or_error(answer)}
            else:
                result = {"type": {"cancelled": "canceled"}.get(outcome, outcome)}
            lines.append({"custom_id": req.custom_id, "result": result})
        # Anthropic does not keep request order: a client must match by custom_id.
        lines.sort(key=lambda line: hashlib.blake2b(line["custom_id"].encode(), digest_size=8).digest())
        return "".join(json.dumps(line) + "\n" for line in lines).encode()

    # -- the clock --------------------------------------------------------------------------
    def _validating_s(self) -> float:
        return min(VALIDATING_S, self.complete_after_s / 10)

    def _state(self, b: _Batch) -> str:
        """Where the batch is by now; ends it (answers its requests) the first time it is due."""
        if b.errors:
            return "failed"
        if b.end_state is None:
            now = self.clock()
            due = b.created_at + self.complete_after_s
            expiry = b.created_at + self.expire_after_s if self.expire_after_s is not None else None
            if b.cancel_at is not None and b.cancel_at < due:
                if now < b.cancel_at + self._validating_s():
                    return "cancelling"
                self._end(b, "cancelled", b.cancel_at)
            elif expiry is not None and expiry < due and now >= expiry:
                self._end(b, "expired", expiry)
            elif now >= due:
                self._end(b, "completed", due)
            elif b.kind == "openai" and now < b.created_at + self._validating_s():
                return "validating"
            else:
                return "in_progress"
        if b.kind == "anthropic":
            return "ended"
        assert b.end_state is not None
        return b.end_state

    def _end(self, b: _Batch, state: str, at: float) -> None:
        """Answer the share of requests that the time allowed (all when completed); the rest
        end ``cancelled``/``expired``."""
        share = 1.0 if state == "completed" else max(0.0, (at - b.created_at) / self.complete_after_s)
        answered = int(len(b.requests) * share)
        results: list[tuple[_Request, Answer | None, str]] = []
        for i, req in enumerate(b.requests):
            if i >= answered:
                results.append((req, None, state))
                continue
            answer = self.complete(req.url, b.headers, req.body)
            results.append((req, answer, "succeeded" if 200 <= answer.status < 300 else "failed"))
        b.results, b.ended_at, b.end_state = results, at, state
        if b.kind == "openai":
            out, err = _openai_files(results, state)
            if out:
                f = _File(f"file-{uuid.uuid4().hex[:24]}", out, f"{b.id}_output.jsonl", "batch_output", at)
                self.files[f.id] = f
                b.output_file_id = f.id
            if err:
                f = _File(f"file-{uuid.uuid4().hex[:24]}", err, f"{b.id}_error.jsonl", "batch_output", at)
                self.files[f.id] = f
                b.error_file_id = f.id


# -- helpers -------------------------------------------------------------------------------
def _parse_openai_input(content: bytes, endpoint: str) -> tuple[list[_Request], list[dict]]:
    requests: list[_Request] = []
    errors: list[dict] = []
    seen: set[str] = set()
    for no, raw in enumerate(content.splitlines(), start=1):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
            cid, url, body = line["custom_id"], line["url"], line["body"]
            if line.get("method") != "POST" or not isinstance(cid, str) or not isinstance(body, dict):
                raise ValueError
        except (ValueError, KeyError, TypeError):
            errors.append(
                {"code": "invalid_json_line", "message": "each line needs custom_id, method POST, url, body", "line": no}
            )
            continue
        if url != endpoint:
            errors.append({"code": "mismatched_endpoint", "message": f"url {url!r} is not the batch's endpoint", "line": no})
        elif cid in seen:
            errors.append({"code": "duplicate_custom_id", "message": f"custom_id {cid!r} appears twice", "line": no})
        seen.add(cid)
        requests.append(_Request(cid, url, json.dumps(body).encode()))
    if not requests and not errors:
        errors.append({"code": "empty_file", "message": "the input file has no requests", "line": None})
    if len(requests) > OPENAI_MAX_REQUESTS:
        errors.append({"code": "too_many_requests", "message": f"more than {OPENAI_MAX_REQUESTS} requests", "line": None})
    return requests, errors


def _openai_files(results: list[tuple[_Request, Answer | None, str]], state: str) -> tuple[bytes, bytes]:
    out: list[dict[str, Any]] = []
    err: list[dict[str, Any]] = []
    for req, answer, outcome in results:
        line: dict[str, Any] = {"id": f"batch_req_{uuid.uuid4().hex[:24]}", "custom_id": req.custom_id}
        if answer is None:
            code = "batch_expired" if state == "expired" else "batch_cancelled"
            line |= {"response": None, "error": {"code": code, "message": f"request not executed: the batch was {state}"}}
            err.append(line)
            continue
        line |= {
            "response": {"status_code": answer.status, "request_id": answer.request_id, "body": _json_or_error(answer)},
            "error": None,
        }
        (out if outcome == "succeeded" else err).append(line)
    encode = lambda lines: "".join(json.dumps(x) + "\n" for x in lines).encode()
    return encode(out), encode(err)


def _json_or_error(answer: Answer) -> Any:
    try:
        return json.loads(answer.body)
    except ValueError:
        return {"error": {"message": "the server returned a broken body", "type": "server_error"}}


def _multipart(content_type: str, body: bytes) -> dict[str, tuple[bytes, str]]:
    """The fields of a multipart/form-data body: name -> (bytes, filename)."""
    if not content_type.startswith("multipart/form-data"):
        raise ValueError("expected multipart/form-data")
    msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
        b"Content-Type: " + content_type.encode() + b"\r\n\r\n" + body
    )
    fields: dict[str, tuple[bytes, str]] = {}
    for part in msg.iter_parts():
        name = part.get_param("name", header="content-disposition")
        if isinstance(name, str):
            payload = part.get_payload(decode=True)
            fields[name] = (payload if isinstance(payload, bytes) else b"", part.get_filename() or "")
    return fields


def _forwarded(headers: dict[str, str]) -> dict[str, str]:
    """The caller's credentials and simulator test headers, for its batch's requests."""
    keep = ("authorization", "x-api-key", "anthropic-version", "x-sim-fault", "x-sim-latency-ms")
    return {k: v for k, v in headers.items() if k in keep}


def _page(items: list[_Batch], after: str | None, limit: int) -> tuple[list[_Batch], bool]:
    start = 0
    if after is not None:
        ids = [b.id for b in items]
        start = ids.index(after) + 1 if after in ids else len(items)
    limit = max(1, min(limit, 100))
    return items[start : start + limit], start + limit < len(items)


def _file_object(f: _File) -> dict[str, Any]:
    return {
        "id": f.id,
        "object": "file",
        "bytes": len(f.content),
        "created_at": int(f.created_at),
        "filename": f.filename,
        "purpose": f.purpose,
    }


def _iso(ts: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


def _oa_error(status: int, message: str) -> tuple[int, Any]:
    return status, {"error": {"message": message, "type": "invalid_request_error", "code": None}}


def _an_error(status: int, etype: str, message: str) -> tuple[int, Any]:
    return status, {"type": "error", "error": {"type": etype, "message": message}}

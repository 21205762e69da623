"""A local HTTP server that answers huggingface_hub's download requests from model folders,
and records each request, so tests can see which files a hub id makes us fetch (no internet).

Serves `HEAD|GET /<org>/<name>/resolve/<revision>/<file>` (what hf_hub_download asks) and
`GET /api/models/<org>/<name>/revision|tree/<revision>` (what snapshot_download asks for).
Point huggingface_hub at it with HF_ENDPOINT (or huggingface_hub.constants.ENDPOINT).
"""
from __future__ import annotations

import hashlib
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path


class FakeHub:
    """`with FakeHub({"org/name": folder}) as hub:` -> hub.endpoint, hub.requests [(method, repo, file)]."""

    def __init__(self, repos: dict[str, str | Path]):
        self.repos = {repo: Path(folder) for repo, folder in repos.items()}
        self.requests: list[tuple[str, str, str]] = []
        self._lock = threading.Lock()
        hub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_HEAD(self):
                hub._answer(self, body=False)

            def do_GET(self):
                hub._answer(self, body=True)

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.endpoint = f"http://127.0.0.1:{self._server.server_address[1]}"

    def __enter__(self) -> "FakeHub":
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc):
        self._server.shutdown()
        self._server.server_close()

    def fetched(self, method: str = "GET") -> list[str]:
        """Repo files requested with `method`, in order (the api listing and other routes excluded)."""
        return [f for m, repo, f in self.requests if m == method and repo in self.repos and not f.startswith("<api")]

    def _commit(self, repo: str) -> str:
        folder = self.repos[repo]
        h = hashlib.sha1(repo.encode())
        for p in sorted(folder.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(folder).as_posix().encode() + p.read_bytes())
        return h.hexdigest()

    def _answer(self, handler: BaseHTTPRequestHandler, body: bool) -> None:
        parts = handler.path.split("?")[0].strip("/").split("/")
        if parts[:2] == ["api", "models"] and len(parts) >= 6:
            repo, file = "/".join(parts[2:4]), f"<api {parts[4]}>"
        elif len(parts) >= 5 and parts[2] == "resolve":
            repo, file = "/".join(parts[:2]), "/".join(parts[4:])
        else:
            repo, file = "?", handler.path
        with self._lock:
            self.requests.append((handler.command, repo, file))
        if repo not in self.repos:
            return self._send(handler, 404, {"X-Error-Code": "RepoNotFound"}, b"", body)
        commit = self._commit(repo)
        folder = self.repos[repo]
        if file.startswith("<api"):
            files = [p for p in sorted(folder.rglob("*")) if p.is_file()]
            if file == "<api tree>":
                listing = [{"type": "file", "path": p.relative_to(folder).as_posix(), "size": p.stat().st_size,
                            "oid": hashlib.sha1(p.read_bytes()).hexdigest()} for p in files]
            else:
                listing = {"id": repo, "sha": commit,
                           "siblings": [{"rfilename": p.relative_to(folder).as_posix()} for p in files]}
            data = json.dumps(listing).encode()
            return self._send(handler, 200, {"Content-Type": "application/json", "X-Repo-Commit": commit}, data, body)
        path = folder / file
        if not path.is_file():
            return self._send(handler, 404, {"X-Error-Code": "EntryNotFound", "X-Repo-Commit": commit}, b"", body)
        data = path.read_bytes()
        etag = hashlib.sha256(data).hexdigest()
        self._send(handler, 200, {"X-Repo-Commit": commit, "ETag": f'"{etag}"'}, data, body)

    @staticmethod
    def _send(handler, status: int, headers: dict, data: bytes, body: bool) -> None:
        handler.send_response(status)
        for k, v in headers.items():
            handler.send_header(k, v)
        handler.send_header("Content-Length", str(len(data)))
        handler.end_headers()
        if body:
            handler.wfile.write(data)

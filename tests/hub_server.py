"""A loopback Hugging Face Hub for tests: the subset of the Hub HTTP API that ``huggingface_hub`` 2.4 uses to
create a repository, upload a folder and download files.

The real Hub is unreachable from the test machines, so ``sermodels.hub`` is tested against this server instead of a
mock: the genuine ``huggingface_hub`` client sends its genuine requests over a socket bound to 127.0.0.1.

Requests served (read from ``huggingface_hub`` 2.4's ``hf_api.py``, ``_commit_api.py``, ``lfs.py`` and
``file_download.py``):

- ``POST /api/repos/create`` -> ``{"url"}``; 409 when the repository exists (``create_repo(exist_ok=True)``).
- ``POST /api/models/{repo}/branch/{branch}`` (``create_branch``); 409 when it exists.
- ``POST /api/validate-yaml`` (``upload_folder`` checks a README.md's front matter before hashing).
- ``POST /api/models/{repo}/preupload/{rev}`` -> per file ``uploadMode`` ("lfs" or "regular"), ``shouldIgnore``
  and the remote ``oid`` (git blob sha1, or sha256 for LFS) so that unchanged files are skipped.
- ``POST /{repo}.git/info/lfs/objects/batch`` (basic transfer) -> an upload and a verify action per new object;
  ``PUT`` of the bytes to the upload action (the sha256 and size are checked); ``POST`` to the verify action.
- ``POST /api/models/{repo}/commit/{rev}`` (NDJSON: a header line, then ``file`` / ``lfsFile`` / ``deletedFile``
  lines) -> ``{"commitUrl", "commitOid"}``. Commit ids are 40-hex sha1s of the commit's content.
- ``HEAD``/``GET /{repo}/resolve/{rev}/{path}`` with ``X-Repo-Commit``, ``ETag`` (git sha1 for regular files),
  ``X-Linked-Etag``/``X-Linked-Size`` (sha256 and size for LFS files) and ``Content-Length``; ``Range: bytes=N-``.
  Files are served directly (no CDN redirect: a same-host redirect would be followed by the client and the
  metadata headers must be on the final response). Errors carry ``X-Error-Code`` (``RepoNotFound``,
  ``RevisionNotFound``, ``EntryNotFound``) as the client maps them to its exception types.
- ``GET /api/models/{repo}[/revision/{rev}]`` (``model_info``/``repo_info``, used by ``create_commit`` when nothing
  changed).

Xet storage is not spoken: the client uses it whenever ``hf_xet`` is installed, so callers must disable it with the
documented ``HF_HUB_DISABLE_XET=1`` (or ``huggingface_hub.constants.HF_HUB_DISABLE_XET = True`` in-process).
Write requests need an ``Authorization`` header (any token), as on the real Hub.

Repositories live under ``root``: blobs by sha256 in ``root/blobs`` and each repository's commits and branches in
``root/repos/<org>/<name>.json``. :meth:`HubServer.tamper` rewrites a file of an existing commit in place, as a
compromised mirror would, to test checksum verification.
"""

from __future__ import annotations

import base64
import fnmatch
import hashlib
import json
import re
import threading
from dataclasses import asdict, dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from urllib.parse import parse_qs, unquote, urlsplit

# Default .gitattributes of a new Hub repository (abridged): these patterns are stored with LFS.
GITATTRIBUTES = "".join(
    f"{pattern} filter=lfs diff=lfs merge=lfs -text\n"
    for pattern in ("*.bin", "*.ckpt", "*.h5", "*.npz", "*.onnx", "*.pt", "*.pth", "*.safetensors", "*.zip")
)
# Files above this size always go to LFS (the Hub's limit for regular git files is 10 MB).
REGULAR_MAX_BYTES = 10_000_000
COMMIT_RE_LEN = 40


def git_blob_sha1(data: bytes) -> str:
    """The git object id of a blob: sha1 over ``"blob <size>\\0" + data``."""
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).hexdigest()


@dataclass
class StoredFile:
    sha256: str
    size: int
    git_sha1: str
    lfs: bool


@dataclass
class Commit:
    oid: str
    parent: str | None
    message: str
    files: dict[str, StoredFile]


@dataclass
class Repo:
    repo_id: str
    private: bool
    commits: dict[str, Commit] = field(default_factory=dict)
    branches: dict[str, str] = field(default_factory=dict)


class HubError(Exception):
    """An HTTP error answer: status, message and the Hub's ``X-Error-Code``."""

    def __init__(
        self, status: int, message: str, code: str | None = None, headers: dict | None = None, extra: dict | None = None
    ):
        super().__init__(message)
        self.status, self.message, self.code, self.headers, self.extra = status, message, code, headers or {}, extra


class HubServer:
    """A threaded Hub on ``127.0.0.1:<free port>``; use as a context manager or call :meth:`start`/:meth:`stop`.

    ``lifetime_s`` bounds how long it serves: a timer stops it even if a test forgets to.
    """

    def __init__(self, root: str | Path, lifetime_s: float = 120.0):
        self.root = Path(root)
        (self.root / "blobs").mkdir(parents=True, exist_ok=True)
        (self.root / "repos").mkdir(parents=True, exist_ok=True)
        self.lifetime_s = lifetime_s
        self.repos: dict[str, Repo] = {}
        self.requests: list[tuple[str, str]] = []
        self.lock = threading.RLock()
        self._httpd: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._counter = 0

    # -- life cycle ----------------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._httpd is None:
            raise RuntimeError("the loopback Hub is not running")
        host, port = self._httpd.server_address[:2]
        return f"http://{host}:{port}"

    def start(self) -> HubServer:
        handler = type("BoundHubHandler", (_HubHandler,), {"hub": self})
        self._httpd = ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self._httpd.daemon_threads = True
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="loopback-hub", daemon=True
        )
        self._thread.start()
        self._timer = threading.Timer(self.lifetime_s, self.stop)
        self._timer.daemon = True
        self._timer.start()
        return self

    def stop(self) -> None:
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        httpd, self._httpd = self._httpd, None
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=10)

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- storage -------------------------------------------------------------------------------------------------

    def blob_path(self, sha256: str) -> Path:
        """Where a blob lives; object ids come from clients, so anything but 64 hex digits is refused."""
        if not isinstance(sha256, str) or not re.fullmatch(r"[0-9a-f]{64}", sha256):
            raise HubError(400, f"invalid LFS object id {sha256!r}: expected 64 lower-case hex digits")
        return self.root / "blobs" / sha256

    def put_blob(self, data: bytes) -> StoredFile:
        sha = hashlib.sha256(data).hexdigest()
        path = self.blob_path(sha)
        if not path.exists():
            tmp = path.with_suffix(f".{threading.get_ident()}.tmp")  # concurrent uploads of one blob
            tmp.write_bytes(data)
            tmp.replace(path)
        return StoredFile(sha256=sha, size=len(data), git_sha1=git_blob_sha1(data), lfs=False)

    def read_blob(self, stored: StoredFile) -> bytes:
        return self.blob_path(stored.sha256).read_bytes()

    def _save(self, repo: Repo) -> None:
        path = self.root / "repos" / f"{repo.repo_id}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(asdict(repo), indent=1, sort_keys=True))

    def repo(self, repo_id: str) -> Repo:
        if repo_id not in self.repos:
            raise HubError(404, f"Repository {repo_id} not found", "RepoNotFound")
        return self.repos[repo_id]

    def commit_of(self, repo: Repo, revision: str) -> Commit:
        """A branch name or a full commit id -> the commit."""
        if revision in repo.branches:
            return repo.commits[repo.branches[revision]]
        if revision in repo.commits:
            return repo.commits[revision]
        raise HubError(404, f"Invalid rev id: {revision}", "RevisionNotFound")

    def create_repo(self, repo_id: str, private: bool = False) -> Repo:
        with self.lock:
            if repo_id in self.repos:
                raise HubError(409, f"You already created this model repo: {repo_id}")
            repo = Repo(repo_id=repo_id, private=private)
            self.repos[repo_id] = repo
            attributes = self.put_blob(GITATTRIBUTES.encode())
            self._new_commit(repo, "main", {".gitattributes": attributes}, "initial commit", parent=None)
            return repo

    def _new_commit(self, repo: Repo, branch: str, files: dict[str, StoredFile], message: str, parent: str | None):
        self._counter += 1
        content = {
            "parent": parent,
            "message": message,
            "n": self._counter,
            "files": {p: asdict(f) for p, f in files.items()},
        }
        oid = hashlib.sha1(json.dumps(content, sort_keys=True).encode()).hexdigest()
        repo.commits[oid] = Commit(oid=oid, parent=parent, message=message, files=dict(files))
        repo.branches[branch] = oid
        self._save(repo)
        return repo.commits[oid]

    def tamper(self, repo_id: str, path: str, data: bytes, revision: str = "main") -> None:
        """Replace ``path`` in the commit ``revision`` points at, keeping the commit id (a corrupted mirror)."""
        with self.lock:
            repo = self.repo(repo_id)
            commit = self.commit_of(repo, revision)
            if path not in commit.files:
                raise KeyError(f"{repo_id}@{commit.oid} has no file {path}")
            stored = self.put_blob(data)
            stored.lfs = commit.files[path].lfs
            commit.files[path] = stored
            self._save(repo)

    def lfs_pattern_match(self, commit: Commit, path: str) -> bool:
        attributes = commit.files.get(".gitattributes")
        if attributes is None:
            return False
        for line in self.read_blob(attributes).decode().splitlines():
            parts = line.split()
            if len(parts) > 1 and "filter=lfs" in parts[1:] and fnmatch.fnmatch(path.rsplit("/", 1)[-1], parts[0]):
                return True
        return False


class _HubHandler(BaseHTTPRequestHandler):
    """Routes one request to the :class:`HubServer` bound as ``hub``."""

    hub: HubServer
    protocol_version = "HTTP/1.1"
    timeout = 30  # idle keep-alive connections are closed after this many seconds

    def log_message(self, format, *args) -> None:  # noqa: A002 - the stdlib's signature
        """Quiet: tests inspect ``hub.requests`` instead of stderr."""

    # -- plumbing ------------------------------------------------------------------------------------------------

    def _segments(self) -> tuple[list[str], dict[str, list[str]]]:
        """Path segments, each percent-decoded *after* splitting (branch names may hold an encoded '/')."""
        parts = urlsplit(self.path)
        return [unquote(s) for s in parts.path.split("/")[1:]], parse_qs(parts.query)

    def _body(self) -> bytes:
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip(), 16)
                if size == 0:
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        return self.rfile.read(int(self.headers.get("Content-Length") or 0))

    def _send(self, status: int, body: bytes = b"", headers: dict[str, str] | None = None, head_only=False) -> None:
        self.send_response(status)
        for key, value in (headers or {}).items():
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        if not head_only and body:
            self.wfile.write(body)

    def _json(self, status: int, payload, headers: dict[str, str] | None = None) -> None:
        self._send(status, json.dumps(payload).encode(), {"Content-Type": "application/json", **(headers or {})})

    def _dispatch(self, method: str) -> None:
        with self.hub.lock:
            self.hub.requests.append((method, self.path))
        body = self._body() if method in ("POST", "PUT") else b""
        try:
            self._route(method, body)
        except HubError as err:
            headers = dict(err.headers)
            if err.code:
                headers["X-Error-Code"] = err.code
            headers["X-Error-Message"] = err.message
            self._send(
                err.status,
                json.dumps({"error": err.message, **(err.extra or {})}).encode(),
                {"Content-Type": "application/json", **headers},
                head_only=method == "HEAD",
            )

    def do_HEAD(self) -> None:  # noqa: N802 - the stdlib's naming
        self._dispatch("HEAD")

    def do_GET(self) -> None:  # noqa: N802
        self._dispatch("GET")

    def do_POST(self) -> None:  # noqa: N802
        self._dispatch("POST")

    def do_PUT(self) -> None:  # noqa: N802
        self._dispatch("PUT")

    def _require_auth(self) -> None:
        if not self.headers.get("Authorization", "").startswith("Bearer "):
            raise HubError(401, "Invalid credentials in Authorization header")

    # -- routes --------------------------------------------------------------------------------------------------

    def _route(self, method: str, body: bytes) -> None:
        seg, query = self._segments()
        if method in ("HEAD", "GET") and len(seg) >= 5 and seg[2] == "resolve":
            return self._resolve(f"{seg[0]}/{seg[1]}", seg[3], "/".join(seg[4:]), head_only=method == "HEAD")
        if method == "GET" and seg[:2] == ["api", "models"] and len(seg) in (4, 6):
            return self._model_info(f"{seg[2]}/{seg[3]}", seg[5] if len(seg) == 6 else "main")
        if method == "POST" and seg == ["api", "validate-yaml"]:
            return self._validate_yaml(json.loads(body))
        if method == "POST" and seg == ["api", "repos", "create"]:
            return self._create_repo(json.loads(body))
        if method == "POST" and seg[:2] == ["api", "models"] and len(seg) == 6:
            repo_id, action, rev = f"{seg[2]}/{seg[3]}", seg[4], seg[5]
            if action == "preupload":
                return self._preupload(repo_id, rev, json.loads(body))
            if action == "commit":
                return self._commit(repo_id, rev, body)
            if action == "branch":
                return self._create_branch(repo_id, rev, json.loads(body or b"{}"))
        if (
            method == "POST"
            and len(seg) == 6
            and seg[1].endswith(".git")
            and seg[2:] == ["info", "lfs", "objects", "batch"]
        ):
            return self._lfs_batch(f"{seg[0]}/{seg[1][: -len('.git')]}", json.loads(body))
        if method == "PUT" and seg[:2] == ["_lfs", "upload"] and len(seg) == 5:
            return self._lfs_upload(seg[4], body)
        if method == "POST" and seg[:2] == ["_lfs", "verify"]:
            return self._lfs_verify(json.loads(body))
        raise HubError(404, f"loopback Hub: no route for {method} {self.path}")

    def _resolve(self, repo_id: str, revision: str, path: str, head_only: bool) -> None:
        hub = self.hub
        with hub.lock:
            repo = hub.repo(repo_id)
            commit = hub.commit_of(repo, revision)
            stored = commit.files.get(path)
            if stored is None:
                raise HubError(
                    404, f"{path} does not exist at {commit.oid}", "EntryNotFound", {"X-Repo-Commit": commit.oid}
                )
            data = hub.read_blob(stored)
        headers = {"X-Repo-Commit": commit.oid, "Accept-Ranges": "bytes", "Content-Type": "application/octet-stream"}
        if stored.lfs:
            headers.update({"ETag": f'"{stored.git_sha1}"', "X-Linked-Etag": f'"{stored.sha256}"'})
            headers["X-Linked-Size"] = str(stored.size)
        else:
            headers["ETag"] = f'"{stored.git_sha1}"'
        start = self._range_start(len(data))
        if start:
            headers["Content-Range"] = f"bytes {start}-{len(data) - 1}/{len(data)}"
            return self._send(206, data[start:], headers, head_only)
        self._send(200, data, headers, head_only)

    def _range_start(self, size: int) -> int:
        spec = self.headers.get("Range")
        if not spec:
            return 0
        if not spec.startswith("bytes=") or not spec[len("bytes=") :].endswith("-"):
            raise HubError(416, f"loopback Hub only serves open ranges 'bytes=N-', got {spec!r}")
        start = int(spec[len("bytes=") : -1])
        if start >= size:
            raise HubError(416, f"range start {start} beyond size {size}")
        return start

    def _model_info(self, repo_id: str, revision: str) -> None:
        with self.hub.lock:
            repo = self.hub.repo(repo_id)
            commit = self.hub.commit_of(repo, revision)
            siblings = [{"rfilename": p} for p in sorted(commit.files)]
        self._json(
            200, {"id": repo_id, "modelId": repo_id, "sha": commit.oid, "private": repo.private, "siblings": siblings}
        )

    def _validate_yaml(self, payload: dict) -> None:
        content = payload.get("content", "")
        if content.startswith("---") and "\n---" not in content[3:]:
            return self._json(400, {"errors": [{"message": "front matter opened by '---' is never closed"}]})
        self._json(200, {"errors": [], "warnings": []})

    def _create_repo(self, payload: dict) -> None:
        self._require_auth()
        name, org = payload.get("name"), payload.get("organization")
        if not name or not org:
            raise HubError(400, f"loopback Hub needs 'organization/name' repo ids, got {payload}")
        if payload.get("type", "model") != "model":
            raise HubError(400, "loopback Hub serves model repositories only")
        repo_id = f"{org}/{name}"
        try:
            self.hub.create_repo(repo_id, private=payload.get("visibility") == "private")
        except HubError as err:  # the Hub's 409 answer still carries the url, which create_repo(exist_ok) reads
            err.extra = {"url": f"{self.hub.url}/{repo_id}"}
            raise
        self._json(200, {"url": f"{self.hub.url}/{repo_id}", "name": repo_id})

    def _create_branch(self, repo_id: str, branch: str, payload: dict) -> None:
        self._require_auth()
        with self.hub.lock:
            repo = self.hub.repo(repo_id)
            if branch in repo.branches:
                raise HubError(409, f"Reference already exists: refs/heads/{branch}")
            start = self.hub.commit_of(repo, payload.get("startingPoint") or "main")
            repo.branches[branch] = start.oid
            self.hub._save(repo)
        self._json(200, {})

    def _preupload(self, repo_id: str, revision: str, payload: dict) -> None:
        self._require_auth()
        with self.hub.lock:
            commit = self.hub.commit_of(self.hub.repo(repo_id), revision)
            answers = []
            for item in payload["files"]:
                path, sample = item["path"], base64.b64decode(item["sample"])
                lfs = self.hub.lfs_pattern_match(commit, path) or item["size"] > REGULAR_MAX_BYTES or b"\x00" in sample
                remote = commit.files.get(path)
                oid = None if remote is None else (remote.sha256 if remote.lfs else remote.git_sha1)
                answers.append(
                    {"path": path, "uploadMode": "lfs" if lfs else "regular", "shouldIgnore": False, "oid": oid}
                )
        self._json(200, {"files": answers, "commitOid": commit.oid})

    def _lfs_batch(self, repo_id: str, payload: dict) -> None:
        self._require_auth()
        self.hub.repo(repo_id)
        if payload.get("operation") != "upload" or "basic" not in payload.get("transfers", ["basic"]):
            raise HubError(422, f"loopback Hub supports LFS 'upload' with 'basic' transfer only, got {payload}")
        objects = []
        for obj in payload["objects"]:
            oid, size = obj["oid"], obj["size"]
            answer = {"oid": oid, "size": size, "authenticated": True}
            if not self.hub.blob_path(oid).exists():
                answer["actions"] = {
                    "upload": {"href": f"{self.hub.url}/_lfs/upload/{repo_id}/{oid}"},
                    "verify": {"href": f"{self.hub.url}/_lfs/verify/{repo_id}"},
                }
            objects.append(answer)
        self._json(200, {"transfer": "basic", "objects": objects}, {"Content-Type": "application/vnd.git-lfs+json"})

    def _lfs_upload(self, oid: str, body: bytes) -> None:
        actual = hashlib.sha256(body).hexdigest()
        if actual != oid:
            raise HubError(400, f"LFS object {oid}: received bytes hash to {actual}")
        self.hub.put_blob(body)
        self._send(200)

    def _lfs_verify(self, payload: dict) -> None:
        path = self.hub.blob_path(payload["oid"])
        if not path.exists() or path.stat().st_size != payload["size"]:
            raise HubError(404, f"LFS object {payload['oid']} ({payload['size']} bytes) not uploaded")
        self._json(200, {})

    def _commit(self, repo_id: str, revision: str, body: bytes) -> None:
        self._require_auth()
        lines = [json.loads(line) for line in body.decode().splitlines() if line.strip()]
        if not lines or lines[0].get("key") != "header":
            raise HubError(400, "commit payload must start with a header line")
        hub = self.hub
        with hub.lock:
            repo = hub.repo(repo_id)
            parent = hub.commit_of(repo, revision)
            if revision not in repo.branches:
                raise HubError(400, f"commits go to a branch; {revision!r} is not one of {sorted(repo.branches)}")
            expected_parent = lines[0]["value"].get("parentCommit")
            if expected_parent and expected_parent != parent.oid:
                raise HubError(412, f"parent commit {expected_parent} is not the head {parent.oid} of {revision}")
            files = dict(parent.files)
            for line in lines[1:]:
                key, value = line["key"], line["value"]
                if key == "file":
                    if value.get("encoding") != "base64":
                        raise HubError(400, f"unsupported encoding {value.get('encoding')!r}")
                    files[value["path"]] = hub.put_blob(base64.b64decode(value["content"]))
                elif key == "lfsFile":
                    blob = hub.blob_path(value["oid"])
                    if not blob.exists():
                        raise HubError(422, f"LFS object {value['oid']} for {value['path']} was never uploaded")
                    stored = hub.put_blob(blob.read_bytes())
                    stored.lfs = True
                    files[value["path"]] = stored
                elif key == "deletedFile":
                    if files.pop(value["path"], None) is None:
                        raise HubError(404, f"A file with this name doesn't exist: {value['path']}", "EntryNotFound")
                else:
                    raise HubError(400, f"loopback Hub does not support commit operation {key!r}")
            commit = hub._new_commit(repo, revision, files, lines[0]["value"]["summary"], parent=parent.oid)
        self._json(
            200, {"commitUrl": f"{hub.url}/{repo_id}/commit/{commit.oid}", "commitOid": commit.oid, "success": True}
        )

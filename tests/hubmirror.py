"""An offline Hugging Face hub for the tests: local git mirrors of the Table 1 repos, served by olah.

`build_mirror(root)` writes non-bare git repositories under `root/{models,datasets}/ORG/NAME`, as
olah 0.5.4 serves them offline (its config names the folder in `mirrors-path`):

- a PEFT LoRA adapter repo (`LORA`) holding the demo family's Math adapter, as uploaded;
- the four Table 1 model ids holding the demo family (`demofamily/models/{base,math,code,if}`):
  weights in two shards with their index, as the real checkpoints are sharded, stored as Git LFS
  pointers with the objects under `.git/lfs/objects/aa/bb/OID`; two commits each, the second
  changing `generation_config.json` and the card, so `main` has moved past the first;
- the datasets in their hub layouts and column names, each with a README.md card: `google/IFEval`
  (`ifeval_input_data.jsonl`), `allenai/aime-2021-2025` and `allenai/Dolci-RL-Zero-*-7B` (parquet
  under `data/`).

`HubServer` starts olah (offline) on 127.0.0.1 behind `CountingProxy`, the clients' endpoint, which
logs every request with the bytes it served, can stall or fail chosen files, and answers byte
ranges as the hub's CDN does (olah's mirror route ignores `Range`).
"""

from __future__ import annotations

import hashlib
import http.client
import http.server
import io
import json
import os
import re
import socket
import struct
import subprocess
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

ROOT = Path(__file__).resolve().parents[1]
DEMO_MODELS = ROOT / "demofamily" / "models"
MODELS = {
    "allenai/Olmo-3-1025-7B": "base",
    "allenai/Olmo-3-7B-RL-Zero-Math": "math",
    "allenai/Olmo-3-7B-RL-Zero-Code": "code",
    "allenai/Olmo-3-7B-RL-Zero-IF": "if",
}
# a PEFT LoRA adapter repo of the base: the demo family's Math adapter
LORA, LORA_FOLDER = "mergeeval-demo/Olmo-3-7B-Math-LoRA", "lora_math"
ADAPTER_FILES = ("adapter_config.json", "adapter_model.safetensors", "tokenizer.json",
                 "tokenizer_config.json", "chat_template.jinja")  # fmt: skip
DOLCI = {d: f"allenai/Dolci-RL-Zero-{d}-7B" for d in ("Math", "Code", "IF")}
IFEVAL, AIME = "google/IFEval", "allenai/aime-2021-2025"
IFEVAL_LIKE = "argilla/ifeval-like-data"  # table1_dev's instruction-following set
SHARDS = 2
COPIED = ("config.json", "tokenizer.json", "tokenizer_config.json", "chat_template.jinja")
LFS_SUFFIXES = (".safetensors", ".parquet")
GIT_ENV = {
    "GIT_CONFIG_GLOBAL": os.devnull,  # no user or system git config (no git-lfs filters)
    "GIT_CONFIG_NOSYSTEM": "1",
    "GIT_AUTHOR_NAME": "mirror",
    "GIT_AUTHOR_EMAIL": "mirror@example.invalid",
    "GIT_COMMITTER_NAME": "mirror",
    "GIT_COMMITTER_EMAIL": "mirror@example.invalid",
}


# ---------------------------------------------------------------------------------------------
# git repositories


def git(repo: Path, *args: str, date: str | None = None) -> str:
    env = {**os.environ, **GIT_ENV}
    if date:
        env.update(GIT_AUTHOR_DATE=date, GIT_COMMITTER_DATE=date)
    r = subprocess.run(
        ["git", *args], cwd=repo, env=env, capture_output=True, text=True, check=False
    )
    if r.returncode:
        raise RuntimeError(f"git {' '.join(args)} in {repo}: {r.stderr.strip()}")
    return r.stdout.strip()


def lfs_pointer(data: bytes) -> tuple[str, bytes]:
    """Git LFS's pointer file for `data`, and its oid."""
    oid = hashlib.sha256(data).hexdigest()
    text = f"version https://git-lfs.github.com/spec/v1\noid sha256:{oid}\nsize {len(data)}\n"
    return oid, text.encode()


def write_files(repo: Path, files: dict[str, bytes]) -> None:
    """Write files into the work tree; weights and parquet as LFS pointers plus their objects."""
    for rel, data in files.items():
        path = repo / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if rel.endswith(LFS_SUFFIXES):
            oid, pointer = lfs_pointer(data)
            obj = repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid
            obj.parent.mkdir(parents=True, exist_ok=True)
            obj.write_bytes(data)
            data = pointer
        path.write_bytes(data)


def commit(repo: Path, files: dict[str, bytes], message: str, date: str) -> str:
    write_files(repo, files)
    git(repo, "add", "-A")
    git(repo, "commit", "-q", "-m", message, date=date)
    return git(repo, "rev-parse", "HEAD")


def new_repo(root: Path, kind: str, repo_id: str) -> Path:
    repo = root / kind / repo_id
    repo.mkdir(parents=True)
    git(repo, "init", "-q", "-b", "main")
    return repo


GITATTRIBUTES = b"*.safetensors filter=lfs diff=lfs merge=lfs -text\n*.parquet filter=lfs diff=lfs merge=lfs -text\n"


def card(title: str, meta: str = "") -> bytes:
    return f"---\nlicense: apache-2.0\n{meta}---\n\n# {title}\n\nA test mirror.\n".encode()


# ---------------------------------------------------------------------------------------------
# models


def shard_safetensors(data: bytes, n: int) -> dict[str, bytes]:
    """A single safetensors file as `n` shards plus `model.safetensors.index.json` (HF naming)."""
    (hlen,) = struct.unpack("<Q", data[:8])
    header = json.loads(data[8 : 8 + hlen])
    header.pop("__metadata__", None)
    body = data[8 + hlen :]
    names = sorted(header, key=lambda k: header[k]["data_offsets"][0])
    groups = [names[i::n] for i in range(n)]
    out, weight_map = {}, {}
    for i, group in enumerate(groups):
        fname = f"model-{i + 1:05d}-of-{n:05d}.safetensors"
        new, chunks, offset = {"__metadata__": {"format": "pt"}}, [], 0
        for name in group:
            start, end = header[name]["data_offsets"]
            new[name] = {**header[name], "data_offsets": [offset, offset + end - start]}
            chunks.append(body[start:end])
            offset += end - start
            weight_map[name] = fname
        head = json.dumps(new, separators=(",", ":")).encode()
        head += b" " * (-len(head) % 8)
        out[fname] = struct.pack("<Q", len(head)) + head + b"".join(chunks)
    index = {"metadata": {"total_size": len(body)}, "weight_map": dict(sorted(weight_map.items()))}
    out["model.safetensors.index.json"] = (json.dumps(index, indent=2) + "\n").encode()
    return out


def model_files(folder: Path) -> dict[str, bytes]:
    files = {name: (folder / name).read_bytes() for name in COPIED if (folder / name).exists()}
    files.update(shard_safetensors((folder / "model.safetensors").read_bytes(), SHARDS))
    files["generation_config.json"] = (folder / "generation_config.json").read_bytes()
    return files


def build_adapter(root: Path, repo_id: str, folder: Path) -> list[str]:
    """An adapter repo: the folder's PEFT files as they are (one commit)."""
    repo = new_repo(root, "models", repo_id)
    files = {n: (folder / n).read_bytes() for n in ADAPTER_FILES if (folder / n).exists()}
    files |= {".gitattributes": GITATTRIBUTES, "README.md": card(repo_id)}
    return [commit(repo, files, "upload the adapter", "2025-11-22T10:00:00+00:00")]


def build_model(root: Path, repo_id: str, folder: Path) -> list[str]:
    """A model repo with the folder's files (first commit) and a later commit that moves main."""
    repo = new_repo(root, "models", repo_id)
    files = {".gitattributes": GITATTRIBUTES, "README.md": card(repo_id), **model_files(folder)}
    first = commit(repo, files, "upload the checkpoint", "2025-11-20T10:00:00+00:00")
    gen = json.loads(files["generation_config.json"])
    later = {
        "generation_config.json": (
            json.dumps({**gen, "temperature": 0.6}, indent=2) + "\n"
        ).encode(),
        "README.md": card(repo_id) + b"\nUpdated generation defaults.\n",
    }
    second = commit(repo, later, "update generation_config.json", "2025-11-21T10:00:00+00:00")
    return [first, second]


# ---------------------------------------------------------------------------------------------
# datasets


def parquet(rows: list[dict]) -> bytes:
    buf = io.BytesIO()
    pq.write_table(pa.Table.from_pylist(rows), buf)
    return buf.getvalue()


PARQUET_CARD = (
    "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
)


def ifeval_rows() -> list[dict]:
    """google/IFEval's columns; kwargs carries every checker argument, null where unused."""
    kw = {"num_highlights": None, "relation": None, "num_words": None, "keywords": None}
    return [
        {
            "key": 1000 + i,
            "prompt": f"Write a short note about topic {i}. Highlight at least 2 sections.",
            "instruction_id_list": ["detectable_format:number_highlighted_sections"],
            "kwargs": [{**kw, "num_highlights": 2}],
        }
        for i in range(6)
    ]


def aime_rows() -> list[dict]:
    """allenai/aime-2021-2025's columns: one row per problem, `year` selects the contest."""
    return [
        {
            "id": f"{year}-I-{i + 1}",
            "problem": f"Find the remainder when {year + i} is divided by 1000.",
            "answer": str((year + i) % 1000),
            "url": f"https://artofproblemsolving.com/wiki/index.php/{year}_AIME_I_Problems/Problem_{i + 1}",
            "year": year,
        }
        for year in (2021, 2022, 2023, 2024, 2025)
        for i in range(3)
    ]


def ifeval_like_rows(n: int = 5) -> list[dict]:
    """argilla/ifeval-like-data's `filtered` columns: IFEval's, kwargs as a JSON string (null where
    unused), the reference response and lm-eval's verdicts on it."""
    kw = {"num_highlights": None, "relation": None, "num_words": None, "keywords": None}
    return [
        {
            "key": 70000 + i,
            "prompt": f"Describe place {i} in lowercase letters only.",
            "response": f"place {i} is quiet.",
            "instruction_id_list": ["change_case:english_lowercase"],
            "kwargs": json.dumps([kw]),
            "prompt_level_strict_acc": True,
            "inst_level_strict_acc": [True],
            "prompt_level_loose_acc": True,
            "inst_level_loose_acc": [True],
        }
        for i in range(n)
    ]


TWO_CONFIG_CARD = (
    "configs:\n- config_name: default\n  data_files:\n  - split: train\n    path: data/train-*\n"
    "- config_name: filtered\n  data_files:\n  - split: train\n    path: filtered/train-*\n"
)


def dolci_rows(domain: str, n: int = 12) -> list[dict]:
    """allenai/Dolci-RL-Zero-*-7B's columns: the prompt as a string and as chat messages."""
    rows = []
    for i in range(n):
        prompt = f"{domain} training prompt {i}: solve it."
        rows.append(
            {
                "id": f"{domain.lower()}-{i}",
                "prompt": prompt,
                "messages": [{"role": "user", "content": prompt}],
                "ground_truth": str(i),
                "dataset": f"dolci_{domain.lower()}",
            }
        )
    return rows


def build_dataset(root: Path, repo_id: str, files: dict[str, bytes], meta: str = "") -> list[str]:
    repo = new_repo(root, "datasets", repo_id)
    first = commit(
        repo,
        {".gitattributes": GITATTRIBUTES, "README.md": card(repo_id, meta), **files},
        "upload the data",
        "2025-10-01T10:00:00+00:00",
    )
    second = commit(
        repo,
        {"README.md": card(repo_id, meta) + b"\nCard updated.\n"},
        "update the card",
        "2025-10-02T10:00:00+00:00",
    )
    return [first, second]


def jsonl(rows: list[dict]) -> bytes:
    return "".join(json.dumps(r) + "\n" for r in rows).encode()


@dataclass
class Mirror:
    root: Path
    commits: dict[str, list[str]] = field(default_factory=dict)  # repo id -> commits, oldest first

    def repo(self, repo_id: str) -> Path:
        kind = "models" if repo_id in MODELS or repo_id == LORA else "datasets"
        return self.root / kind / repo_id

    def main(self, repo_id: str) -> str:
        return git(self.repo(repo_id), "rev-parse", "main")

    def files(self, repo_id: str, commit: str = "main") -> list[str]:
        return git(self.repo(repo_id), "ls-tree", "-r", "--name-only", commit).splitlines()

    def file(self, repo_id: str, rel: str, commit: str = "main") -> bytes:
        """A file's content at a commit, LFS pointers followed to their objects."""
        repo = self.repo(repo_id)
        data = subprocess.run(
            ["git", "show", f"{commit}:{rel}"], cwd=repo, capture_output=True, check=True
        ).stdout
        m = re.match(
            rb"version https://git-lfs.github.com/spec/v1\noid sha256:([0-9a-f]{64})\n", data
        )
        if m:
            oid = m.group(1).decode()
            return (repo / ".git" / "lfs" / "objects" / oid[:2] / oid[2:4] / oid).read_bytes()
        return data


def build_mirror(root: Path) -> Mirror:
    mirror = Mirror(Path(root))
    for repo_id, name in MODELS.items():
        mirror.commits[repo_id] = build_model(mirror.root, repo_id, DEMO_MODELS / name)
    mirror.commits[LORA] = build_adapter(mirror.root, LORA, DEMO_MODELS / LORA_FOLDER)
    mirror.commits[IFEVAL] = build_dataset(
        mirror.root, IFEVAL, {"ifeval_input_data.jsonl": jsonl(ifeval_rows())}
    )
    mirror.commits[AIME] = build_dataset(
        mirror.root, AIME, {"data/train-00000-of-00001.parquet": parquet(aime_rows())}, PARQUET_CARD
    )
    for domain, repo_id in DOLCI.items():
        files = {"data/train-00000-of-00001.parquet": parquet(dolci_rows(domain))}
        mirror.commits[repo_id] = build_dataset(mirror.root, repo_id, files, PARQUET_CARD)
    unfiltered = [{"instruction": r["prompt"], "response": r["response"],
                   "instruction_id_list": r["instruction_id_list"], "kwargs": r["kwargs"]}
                  for r in ifeval_like_rows(8)]  # fmt: skip
    files = {
        "data/train-00000-of-00001.parquet": parquet(unfiltered),
        "filtered/train-00000-of-00001.parquet": parquet(ifeval_like_rows()),
    }
    mirror.commits[IFEVAL_LIKE] = build_dataset(mirror.root, IFEVAL_LIKE, files, TWO_CONFIG_CARD)
    return mirror


# ---------------------------------------------------------------------------------------------
# the server


@dataclass
class Request:
    method: str
    path: str
    status: int
    sent: int  # body bytes sent to the client
    complete: bool  # the whole body was sent
    first: int  # the first byte served (a range request's start)


class CountingProxy(http.server.ThreadingHTTPServer):
    """Forwards to olah and logs each request; `stall` and `fail` hold or break chosen files.

    `stall`: a substring of the path; a GET of it sends half the body, then waits for `release`
    (at most 60 s) and drops the connection. `fail`: {substring: n}: the first n GETs of it get
    a 503. Bodies are buffered whole (the test files are small), so byte ranges are served from them.
    """

    daemon_threads = True

    def __init__(self):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.upstream: tuple[str, int] | None = None
        self.log: list[Request] = []
        self.lock = threading.Lock()
        self.stall: str | None = None
        self.stalled = threading.Event()
        self.release = threading.Event()
        self.fail: dict[str, int] = {}

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"

    def record(self, req: Request) -> None:
        with self.lock:
            self.log.append(req)

    def reset(self) -> None:
        with self.lock:
            self.log.clear()
        self.stall, self.fail = None, {}
        self.stalled.clear()
        self.release.clear()

    def gets(self, part: str = "/resolve/") -> list[Request]:
        """GETs of file contents (paths containing `part`)."""
        with self.lock:
            return [r for r in self.log if r.method == "GET" and part in r.path]


class _Handler(http.server.BaseHTTPRequestHandler):
    server: CountingProxy

    def log_message(self, *args):  # quiet
        pass

    def do_GET(self):
        self._forward("GET")

    def do_HEAD(self):
        self._forward("HEAD")

    def do_POST(self):
        self._forward("POST")

    def _forward(self, method: str) -> None:
        proxy = self.server
        if method == "GET":
            for part, n in list(proxy.fail.items()):
                if part in self.path and n > 0:
                    proxy.fail[part] = n - 1
                    self.send_response(503)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    proxy.record(Request(method, self.path, 503, 0, True, 0))
                    return
        body = None
        if "Content-Length" in self.headers:
            body = self.rfile.read(int(self.headers["Content-Length"]))
        headers = {
            k: v
            for k, v in self.headers.items()
            if k.lower() not in ("host", "range", "connection", "accept-encoding")
        }
        conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
        try:
            conn.request(method, self.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
            status, resp_headers = resp.status, resp.getheaders()
        finally:
            conn.close()
        span = self._range(len(data)) if status == 200 and method == "GET" else None
        payload = data if span is None else data[span[0] : span[1] + 1]
        status = 206 if span else status
        first = span[0] if span else 0
        self.send_response(status)
        for k, v in resp_headers:
            if k.lower() not in ("transfer-encoding", "connection", "date", "server") and not (
                k.lower() == "content-length" and method != "HEAD"
            ):
                self.send_header(k, v)
        if span:
            self.send_header("Content-Range", f"bytes {span[0]}-{span[1]}/{len(data)}")
        if method != "HEAD":
            self.send_header("Content-Length", str(len(payload)))
        self.send_header("Connection", "close")
        self.end_headers()
        if method == "HEAD":
            proxy.record(Request(method, self.path, status, 0, True, 0))
            return
        sent = 0
        try:
            if method == "GET" and proxy.stall and proxy.stall in self.path:
                half = len(payload) // 2
                self.wfile.write(payload[:half])
                self.wfile.flush()
                sent = half
                proxy.stalled.set()
                proxy.release.wait(60)
                return
            self.wfile.write(payload)
            sent = len(payload)
        except OSError:
            pass
        finally:
            proxy.record(Request(method, self.path, status, sent, sent == len(payload), first))

    def _range(self, size: int) -> tuple[int, int] | None:
        """The (first, last) byte of a satisfiable `Range: bytes=A-[B]`, else None."""
        m = re.fullmatch(r"bytes=(\d+)-(\d*)", self.headers.get("Range", "").strip())
        if not m or int(m.group(1)) >= size:
            return None
        return int(m.group(1)), min(int(m.group(2) or size - 1), size - 1)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


OLAH_CONFIG = """\
[basic]
host = "127.0.0.1"
port = {port}
repos-path = "{cache}"
mirrors-path = ["{mirror}"]
hf-scheme = "http"
hf-netloc = "127.0.0.1:9"
hf-lfs-netloc = "127.0.0.1:9"
mirror-scheme = "http"
mirror-netloc = "{proxy}"
mirror-lfs-netloc = "{proxy}"
metadata-cache-ttl = 0  # a branch moved in a mirror is seen at once

[accessibility]
offline = true
"""


class HubServer:
    """olah serving `mirror` offline, behind a CountingProxy; `url` is the clients' HF_ENDPOINT."""

    def __init__(self, olah_cli: str, mirror: Mirror, workdir: Path):
        self.olah_cli, self.mirror, self.workdir = olah_cli, mirror, Path(workdir)
        self.proxy = CountingProxy()
        self.proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return self.proxy.url

    def start(self, timeout: float = 60) -> HubServer:
        port = free_port()
        self.workdir.mkdir(parents=True, exist_ok=True)
        config = self.workdir / "olah.toml"
        proxy_netloc = self.proxy.url.removeprefix("http://")
        config.write_text(
            OLAH_CONFIG.format(
                port=port, cache=self.workdir / "cache", mirror=self.mirror.root, proxy=proxy_netloc
            )
        )
        self.log_file = open(self.workdir / "olah.out", "wb")  # noqa: SIM115 (closed in stop)
        self.proc = subprocess.Popen(
            [self.olah_cli, "--config", str(config), "--log-path", str(self.workdir / "logs")],
            cwd=self.workdir,
            stdout=self.log_file,
            stderr=subprocess.STDOUT,
        )
        self.proxy.upstream = ("127.0.0.1", port)
        threading.Thread(target=self.proxy.serve_forever, daemon=True).start()
        probe = f"/api/models/{next(iter(MODELS))}/revision/main"
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"olah exited ({self.proc.returncode}): {self.output()[-2000:]}")
            try:
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
                conn.request("GET", probe)
                if conn.getresponse().status == 200:
                    break
            except OSError:
                pass
            finally:
                conn.close()
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"olah did not answer {probe} within {timeout} s")
            time.sleep(0.2)
        self.proxy.reset()
        return self

    def output(self) -> str:
        return (self.workdir / "olah.out").read_text(errors="replace")

    def stop(self) -> None:
        self.proxy.release.set()
        self.proxy.shutdown()
        self.proxy.server_close()
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        if getattr(self, "log_file", None):
            self.log_file.close()

    def __enter__(self) -> HubServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()


def hub_env(url: str, hf_home: Path) -> dict[str, str]:
    """The environment of a client of the test hub: its endpoint, a fresh HF_HOME, online."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k not in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", "TRANSFORMERS_OFFLINE", "HF_TOKEN")
    }
    env.update(HF_ENDPOINT=url, HF_HOME=str(hf_home), HF_HUB_DISABLE_TELEMETRY="1")
    env.pop("HF_HUB_CACHE", None)
    env.pop("HF_DATASETS_CACHE", None)
    return env


def olah_cli() -> str:
    """Where the olah-cli that scripts/test.sh installs is: MERGEEVAL_OLAH, else .venv-hub's."""
    return os.environ.get("MERGEEVAL_OLAH") or str(ROOT / ".venv-hub" / "bin" / "olah-cli")

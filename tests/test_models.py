"""Named models: the catalogue's form, and pull against a loopback server (127.0.0.1 only) that serves the
authors' fixture checkpoints in the real URL layout, and misbehaves in every way issue 39 names."""

import http.server
import json
import os
import shutil
import signal
import subprocess
import sys
import threading
import time

import numpy as np
import pytest
import soundfile as sf

from lightsaft_infer import catalogue as cat
from lightsaft_infer import cli, models

from .conftest import REPO, UPSTREAM, UPSTREAM_V2

V1 = "test-lightsaft"  # an LFS-style entry (sha256 and size)
V2 = "test-v2-light"  # a git-blob entry with its config.yaml
LFS = "test-lfs"  # v2 light again as an LFS object: the resuming and concurrency tests (it converts 3x faster)
REPOSITORY, COMMIT = "authors/models", "0123456789abcdef0123456789abcdef01234567"


class Server:
    """A threaded HTTP server on 127.0.0.1 with a route table: ``path -> (kind, payload)``.

    kinds: ``file`` (bytes, honours Range), ``pointer`` (a Git LFS pointer for bytes), ``html``,
    ``redirect`` (to a path), ``stall`` (bytes: sends ``payload[1]`` bytes then waits until released),
    ``missing`` (404). Every request is recorded as ``(path, Range header)``.
    """

    def __init__(self):
        self.routes, self.requests, self.release = {}, [], threading.Event()
        server = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def do_GET(self):
                server.requests.append((self.path, self.headers.get("Range")))
                kind, payload = server.routes.get(self.path, ("missing", None))
                if kind == "missing":
                    self.send_error(404)
                elif kind == "redirect":
                    self.send_response(302)
                    self.send_header("Location", payload)
                    self.end_headers()
                elif kind == "html":
                    self._send(b"<!DOCTYPE html><html><body>sign in</body></html>", "text/html")
                elif kind == "pointer":
                    import hashlib

                    text = (f"version https://git-lfs.github.com/spec/v1\noid sha256:{hashlib.sha256(payload).hexdigest()}\n"
                            f"size {len(payload)}\n").encode()
                    self._send(text)
                elif kind == "stall":
                    data, first = payload
                    self.send_response(200)
                    self.send_header("Content-Length", str(len(data)))
                    self.end_headers()
                    self.wfile.write(data[:first])
                    self.wfile.flush()
                    server.release.wait(30)
                else:
                    self._send(payload)

            def _send(self, data, ctype="application/octet-stream"):
                start = 0
                rng = self.headers.get("Range")
                if rng and rng.startswith("bytes=") and rng.endswith("-"):
                    start = int(rng[6:-1])
                    if start >= len(data):
                        self.send_error(416)
                        return
                    self.send_response(206)
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                else:
                    self.send_response(200)
                self.send_header("Content-Type", ctype)
                self.send_header("Content-Length", str(len(data) - start))
                self.end_headers()
                try:
                    self.wfile.write(data[start:])
                except (BrokenPipeError, ConnectionResetError):
                    pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def close(self):
        self.release.set()
        self.httpd.shutdown()
        self.httpd.server_close()

    def gets(self, path):
        return [r for r in self.requests if r[0] == path]


def media(name):  # the LFS media endpoint's layout
    return f"/media/{REPOSITORY}/{COMMIT}/{name}"


def raw(name):  # the raw endpoint's layout
    return f"/raw/{REPOSITORY}/{COMMIT}/{name}"


def _blob(path):
    return cat.file_digest(path, cat.Integrity("git-blob-sha1", "0" * 40))


def _sha256(path):
    return cat.file_digest(path, cat.Integrity("lfs-sha256", "0" * 64, 1))


@pytest.fixture
def served(tmp_path, monkeypatch, upstream, upstream_v2):
    """A loopback server with the v1 fixture as an LFS object and v2 light (and config) as git blobs, a
    catalogue naming them, and an empty cache; yields ``(server, catalogue dict, catalogue path)``."""
    server = Server()
    v1 = (UPSTREAM / "lightsaft_small.ckpt").read_bytes()
    server.routes[media("lightsaft_small.ckpt")] = ("file", v1)
    server.routes[raw("lightsaft_small.ckpt")] = ("pointer", v1)
    server.routes[raw("v2/epoch=669.ckpt")] = ("file", (UPSTREAM_V2 / "v2_light.ckpt").read_bytes())
    server.routes[raw("v2/config.yaml")] = ("file", (UPSTREAM_V2 / "v2_light.config.yaml").read_bytes())
    server.routes[media("lfs/epoch=669.ckpt")] = ("file", (UPSTREAM_V2 / "v2_light.ckpt").read_bytes())
    data = json.loads(open(cat.BUILTIN).read())
    data["hosts"] = {"lfs": server.base + "/media/{repository}/{commit}/{path}",
                     "git-blob": server.base + "/raw/{repository}/{commit}/{path}"}
    common = {"licence": "MIT", "repository": REPOSITORY, "commit": COMMIT, "ref": "test", "parameters": None,
              "published_mdx_sdr": None, "configuration": "test"}
    data["models"] = [
        {**common, "name": V1, "title": "v1 fixture", "family": "lasaft-v1", "path": "lightsaft_small.ckpt",
         "integrity": {"kind": "lfs-sha256", "digest": _sha256(UPSTREAM / "lightsaft_small.ckpt"), "size": len(v1)}},
        {**common, "name": V2, "title": "v2 fixture", "family": "lasaft-v2", "path": "v2/epoch=669.ckpt",
         "integrity": {"kind": "git-blob-sha1", "digest": _blob(UPSTREAM_V2 / "v2_light.ckpt")},
         "config": {"path": "v2/config.yaml",
                    "integrity": {"kind": "git-blob-sha1", "digest": _blob(UPSTREAM_V2 / "v2_light.config.yaml")}}},
        {**common, "name": LFS, "title": "v2 fixture as LFS", "family": "lasaft-v2", "path": "lfs/epoch=669.ckpt",
         "integrity": {"kind": "lfs-sha256", "digest": _sha256(UPSTREAM_V2 / "v2_light.ckpt"),
                       "size": os.path.getsize(UPSTREAM_V2 / "v2_light.ckpt")},
         "config": {"path": "v2/config.yaml",
                    "integrity": {"kind": "git-blob-sha1", "digest": _blob(UPSTREAM_V2 / "v2_light.config.yaml")}}},
    ]  # fmt: skip
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("LIGHTSAFT_CATALOGUE", str(path))
    monkeypatch.setenv("LIGHTSAFT_HOME", str(tmp_path / "cache"))
    monkeypatch.setenv("LIGHTSAFT_PULL_TIMEOUT", "1")
    yield server, data, path
    server.close()


def _set_catalogue(data, path):
    path.write_text(json.dumps(data))


def _one_line(err: str, *words):
    lines = [line for line in err.splitlines() if line.startswith("lightsaft-infer: error:")]
    assert len(lines) == 1, err
    for word in words:
        assert word in lines[0], (word, lines[0])
    assert "Traceback" not in err


def _nothing_loadable(home, name):
    """No model folder, no staging folder, no file outside downloads/ that a later run could load."""
    assert models.cached(name, home) is None
    assert not (home / "models" / name).exists()
    stray = [p for p in (home / "models").iterdir()] if (home / "models").is_dir() else []
    assert stray == [], stray


# --- the shipped catalogue ------------------------------------------------------------------------------


def test_the_shipped_catalogue_is_well_formed_and_names_every_published_network():
    catalogue = cat.load_catalogue(cat.BUILTIN)
    assert {"lightsaft-mdx", "lasaft-large-2020", "lasaft-large-2019", "lasaft-large-2021", "gpocm-lasaft",
            "lightsaft-net-plus", "lasaft-v2-light", "lasaft-v2-large"} <= set(catalogue.entries)  # fmt: skip
    from lightsaft_infer.configs import FAMILIES

    for entry in catalogue.entries.values():
        assert entry.family in FAMILIES, entry.name
        assert entry.licence == "MIT"
        i = entry.checkpoint.integrity
        assert len(i.digest) == cat.KINDS[i.kind]
        assert (i.size is not None) == (i.kind == "lfs-sha256")
        assert (entry.config is not None) == (entry.family == "lasaft-v2")
        urls = entry.urls(catalogue.hosts, entry.checkpoint)
        assert urls[0].startswith("https://"), urls  # the repository's own host first; a second source after
        assert entry.commit in urls[0] and entry.repository in urls[0]
    # an LFS object comes from the media endpoint, a plain blob from the raw one
    assert "media.githubusercontent.com/media/" in catalogue.get("lasaft-large-2020").urls(
        catalogue.hosts, catalogue.get("lasaft-large-2020").checkpoint)[0]
    v2 = catalogue.get("lasaft-v2-light")
    assert v2.urls(catalogue.hosts, v2.checkpoint)[0] == (
        "https://raw.githubusercontent.com/ws-choi/LASAFT-Net-v2/56ec6cc6908ab0ffc9dcdff97fcd1ed7c43a46d2/"
        "lasaft/pretrained/v2_light/epoch=669.ckpt")


def test_blob_ids_are_what_git_hash_object_prints(upstream_v2):
    """The hashing matches git's own, and the shipped catalogue's config ids are the authors' config.yaml files
    (the fixtures carry them byte for byte)."""
    if not shutil.which("git"):
        pytest.skip("git is not installed")
    catalogue = cat.load_catalogue(cat.BUILTIN)
    for fixture, name in (("v2_light", "lasaft-v2-light"), ("v2_large", "lasaft-v2-large")):
        path = upstream_v2 / f"{fixture}.config.yaml"
        git = subprocess.run(["git", "hash-object", str(path)], capture_output=True, text=True, check=True).stdout.strip()
        assert _blob(path) == git
        assert catalogue.get(name).config.integrity.digest == git
    checkpoint = upstream_v2 / "v1_light.ckpt"
    git = subprocess.run(["git", "hash-object", str(checkpoint)], capture_output=True, text=True, check=True).stdout
    assert _blob(checkpoint) == git.strip()


@pytest.mark.parametrize("change, words", [
    (lambda d: d["models"][0]["integrity"].update(digest="abc"), "64 lowercase hex"),
    (lambda d: d["models"][0]["integrity"].update(kind="md5"), "integrity kind"),
    (lambda d: d["models"][0].update(family="lasaft-v9"), "family"),
    (lambda d: d["models"][0].update(path="../../etc/passwd"), "file path"),
    (lambda d: d["models"][5].pop("config"), "config.yaml"),
    (lambda d: d["hosts"].update(lfs="file:///etc/{path}"), "http(s)"),
])  # fmt: skip
def test_a_malformed_catalogue_is_one_line(tmp_path, monkeypatch, capsys, change, words):
    data = json.loads(open(cat.BUILTIN).read())
    change(data)
    path = tmp_path / "catalogue.json"
    path.write_text(json.dumps(data))
    monkeypatch.setenv("LIGHTSAFT_CATALOGUE", str(path))
    assert cli.main(["models"]) == 1
    _one_line(capsys.readouterr().err, str(path), words)


def test_models_lists_the_catalogue_without_network(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("LIGHTSAFT_HOME", str(tmp_path / "cache"))
    assert cli.main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("lightsaft-mdx", "lasaft-v2-light", "lasaft-v2-large", "5.957", "379 MB", "1,910,270"):
        assert name in out
    assert not (tmp_path / "cache").exists()  # listing writes nothing


# --- pull against the loopback server -------------------------------------------------------------------


def test_pull_verifies_converts_and_separates_by_name(served, tmp_path, capsys, vectors):
    """An LFS entry and a git-blob entry with its config: pulled, verified, converted, exported, then used by
    name; the stems are the authors' network's (parity with the fixture's spectrogram outputs)."""
    server, _, _ = served
    home = tmp_path / "cache"
    assert cli.main(["pull", V1, V2, "-q"]) == 0
    for name in (V1, V2):
        onnx = models.cached(name, home)
        assert onnx is not None and onnx.with_suffix(".safetensors").is_file()
        record = json.loads((onnx.parent / "provenance.json").read_text())
        assert record["name"] == name and record["urls"][0].startswith(server.base)
    assert (home / "models" / V2 / "config.yaml").is_file()
    assert list((home / "downloads").iterdir()) == []  # the verified download is gone once converted
    assert len(server.gets(media("lightsaft_small.ckpt"))) == 1
    # exact: the pulled network gives the authors' outputs
    from lightsaft_infer.backends import open_backend

    net = open_backend(V1, "onnx")
    v = vectors["lightsaft_small"]
    out = net(v["spec_in"].astype(np.float32))
    assert np.abs(out[0, 0] - v["spec_out_0"][0]).max() < 1e-4
    # a second pull is a no-op and fetches nothing
    n = len(server.requests)
    assert cli.main(["pull", V1, "-q"]) == 0
    assert len(server.requests) == n
    # separate by name, with -m
    song = tmp_path / "song.wav"
    sf.write(song, 0.1 * np.random.default_rng(0).standard_normal((44100 * 2, 2)).astype(np.float32), 44100)
    assert cli.main(["separate", str(song), "-m", V2, "-o", str(tmp_path / "out"), "-q"]) == 0
    for stem in ("vocals", "drums", "bass", "other"):
        data, rate = sf.read(tmp_path / "out" / "song" / f"{stem}.wav")
        assert data.shape == (44100 * 2, 2) and rate == 44100 and np.abs(data).max() > 0
    assert len(server.requests) == n  # using a cached model fetches nothing
    # predict.py finds a pulled model by name without torch (the runtime image), and fetches nothing
    from .test_predict import _check_results, _make_songs, _predict

    _make_songs(tmp_path / "test", seconds=(1.5, 1.2))
    proc = _predict(tmp_path, V2, {"LIGHTSAFT_CATALOGUE": os.environ["LIGHTSAFT_CATALOGUE"]}, block_torch=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    _check_results(tmp_path)
    assert len(server.requests) == n


@pytest.mark.slow  # ~10 s: a pull, a separation and a bench in a child process
def test_separate_pulls_on_first_use(served, tmp_path, capsys):
    server, _, _ = served
    song = tmp_path / "song.wav"
    sf.write(song, np.zeros((44100, 2), np.float32), 44100)
    assert cli.main(["separate", str(song), "-m", LFS, "-o", str(tmp_path / "out"), "-q"]) == 0
    assert models.cached(LFS, tmp_path / "cache") is not None
    assert (tmp_path / "out" / "song" / "vocals.wav").is_file()
    # bench by name records the exact path's RTF, and the table shows it
    assert cli.main(["bench", "-m", LFS, "--durations", "3", "--backends", "onnx", "--no-reference"]) == 0
    capsys.readouterr()
    assert cli.main(["models"]) == 0
    row = next(line for line in capsys.readouterr().out.splitlines() if line.startswith(LFS))
    assert "yes" in row and "(3 s song)" in row, row


def test_predict_never_downloads_and_names_the_command(served, tmp_path):
    server, _, catalogue_path = served
    env = {**os.environ, "LIGHTSAFT_WEIGHTS": V1, "LIGHTSAFT_CATALOGUE": str(catalogue_path),
           "LIGHTSAFT_HOME": str(tmp_path / "cache")}
    (tmp_path / "test").mkdir()
    env.update(TEST_DATASET_PATH=str(tmp_path / "test"), RESULTS_DATASET_PATH=str(tmp_path / "results"))
    proc = subprocess.run([sys.executable, str(REPO / "predict.py")], cwd=tmp_path, env=env, capture_output=True,
                          text=True, timeout=120)  # fmt: skip
    assert proc.returncode != 0
    assert f"lightsaft-infer pull {V1}" in proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert server.requests == []


def test_pull_of_a_hand_fetched_file_verifies_it(served, tmp_path, capsys):
    server, _, _ = served
    assert cli.main(["pull", V2, "--file", str(UPSTREAM_V2 / "v1_light.ckpt"), "-q"]) == 1
    _one_line(capsys.readouterr().err, "v1_light.ckpt", "is not the authors' file", "git-blob-sha1")
    # the right file, with its config given by hand too: no network at all
    copy = tmp_path / "hand" / "epoch=669.ckpt"
    copy.parent.mkdir()
    shutil.copy(UPSTREAM_V2 / "v2_light.ckpt", copy)
    assert cli.main(["pull", V2, "--file", str(copy), "--config", str(UPSTREAM_V2 / "v2_light.config.yaml"), "-q"]) == 0
    assert server.requests == []
    assert models.cached(V2, tmp_path / "cache") is not None
    # a config that is not the authors' is refused even when it would parse
    bad = tmp_path / "config.yaml"
    bad.write_text((UPSTREAM_V2 / "v2_light.config.yaml").read_text() + "\n# edited\n")
    assert cli.main(["pull", V2, "--force", "--file", str(copy), "--config", str(bad), "-q"]) == 1
    _one_line(capsys.readouterr().err, "config.yaml", "is not the authors' file")
    assert models.cached(V2, tmp_path / "cache") is not None  # the verified copy from before stays


@pytest.mark.slow  # ~5 s: two pulls
def test_a_mirror_and_a_second_source(served, tmp_path):
    server, data, path = served
    v1 = server.routes.pop(media("lfs/epoch=669.ckpt"))
    server.routes["/mirror/" + REPOSITORY + "/" + COMMIT + "/lfs/epoch=669.ckpt"] = v1
    server.routes["/mirror/" + REPOSITORY + "/" + COMMIT + "/v2/config.yaml"] = server.routes[raw("v2/config.yaml")]
    assert cli.main(["pull", LFS, "--mirror", server.base + "/mirror/", "-q"]) == 0
    assert all(r[0].startswith("/mirror/") for r in server.requests)  # the mirror alone, config included
    # the entry's second source (the authors' lab server) is tried when the repository fails: the hash decides
    shutil.rmtree(tmp_path / "cache")
    server.routes["/lab/epoch=669.ckpt"] = v1
    data["models"][2]["mirrors"] = [server.base + "/lab/epoch=669.ckpt"]
    _set_catalogue(data, path)
    assert cli.main(["pull", LFS, "-q"]) == 0
    assert server.gets(media("lfs/epoch=669.ckpt")) and server.gets("/lab/epoch=669.ckpt")


# --- never trust the wire -------------------------------------------------------------------------------


def _wrong_bytes(server):
    data = bytearray(server.routes[media("lightsaft_small.ckpt")][1])
    data[1000] ^= 0xFF
    return bytes(data)


@pytest.mark.parametrize("case, words", [
    ("hash", "lfs-sha256"),
    ("short", "bytes"),
    ("pointer", "Git LFS pointer"),
    ("html", "HTML page"),
    ("loop", "redirect"),
    ("long", "catalogue's"),
    ("missing", "HTTP 404"),
])  # fmt: skip
def test_a_bad_answer_is_one_line_and_leaves_nothing_loadable(served, tmp_path, capsys, monkeypatch, case, words):
    server, data, path = served
    route = media("lightsaft_small.ckpt")
    good = server.routes[route][1]
    server.routes[route] = {
        "hash": ("file", _wrong_bytes(server)), "short": ("file", good[:-10]), "pointer": ("pointer", good),
        "html": ("html", None), "loop": ("redirect", route), "long": ("file", good + b"\0" * 4096),
        "missing": ("missing", None),
    }[case]  # fmt: skip
    import lightsaft_infer.checkpoint as checkpoint

    def never(*a, **k):  # nothing unverified is ever parsed
        raise AssertionError("an unverified checkpoint was parsed")

    monkeypatch.setattr(checkpoint, "read_checkpoint", never)
    assert cli.main(["pull", V1, "-q"]) == 1
    err = capsys.readouterr().err
    _one_line(err, V1, words)
    _nothing_loadable(tmp_path / "cache", V1)
    assert list((tmp_path / "cache" / "downloads").iterdir()) == []  # no bad bytes kept either


def test_a_stalled_server_is_cut_and_the_download_resumes(served, tmp_path, capsys):
    server, _, _ = served
    route = media("lfs/epoch=669.ckpt")
    good = server.routes[route][1]
    server.routes[route] = ("stall", (good, 3 << 20))
    t = time.monotonic()
    assert cli.main(["pull", LFS, "-q"]) == 1
    assert time.monotonic() - t < 20
    _one_line(capsys.readouterr().err, "stalled")
    _nothing_loadable(tmp_path / "cache", LFS)
    parts = list((tmp_path / "cache" / "downloads").iterdir())
    assert len(parts) == 1 and parts[0].suffix == ".part" and parts[0].stat().st_size == 3 << 20
    server.release.set()
    server.routes[route] = ("file", good)
    assert cli.main(["pull", LFS, "-q"]) == 0
    assert server.gets(route)[-1][1] == f"bytes={3 << 20}-"  # resumed, not restarted
    assert models.cached(LFS, tmp_path / "cache") is not None


def test_ctrl_c_mid_download_keeps_only_the_resumable_part(served, tmp_path):
    server, _, catalogue_path = served
    route = media("lfs/epoch=669.ckpt")
    good = server.routes[route][1]
    server.routes[route] = ("stall", (good, 2 << 20))
    env = {**os.environ, "LIGHTSAFT_CATALOGUE": str(catalogue_path), "LIGHTSAFT_HOME": str(tmp_path / "cache"),
           "LIGHTSAFT_PULL_TIMEOUT": "60"}
    proc = subprocess.Popen([sys.executable, "-m", "lightsaft_infer.cli", "pull", LFS, "-q"], env=env, cwd=REPO,
                            stderr=subprocess.PIPE, text=True)
    downloads = tmp_path / "cache" / "downloads"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        parts = list(downloads.glob("*.part")) if downloads.is_dir() else []
        if parts and parts[0].stat().st_size >= 2 << 20:
            break
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130, err
    assert "interrupted" in err and "resume" in err and "Traceback" not in err
    _nothing_loadable(tmp_path / "cache", LFS)
    server.release.set()
    server.routes[route] = ("file", good)
    assert cli.main(["pull", LFS, "-q"]) == 0
    assert server.gets(route)[-1][1] == f"bytes={2 << 20}-"


def test_two_pulls_at_once_make_one_verified_copy(served, tmp_path):
    server, _, catalogue_path = served
    env = {**os.environ, "LIGHTSAFT_CATALOGUE": str(catalogue_path), "LIGHTSAFT_HOME": str(tmp_path / "cache")}
    cmd = [sys.executable, "-m", "lightsaft_infer.cli", "pull", LFS, "-q"]
    procs = [subprocess.Popen(cmd, env=env, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
             for _ in range(2)]
    outs = [p.communicate(timeout=300) for p in procs]
    assert [p.returncode for p in procs] == [0, 0], outs
    assert len(server.gets(media("lfs/epoch=669.ckpt"))) == 1  # downloaded once
    assert sorted(os.listdir(tmp_path / "cache" / "models")) == [LFS]


def test_a_symlinked_or_unwritable_cache_is_one_line(served, tmp_path, capsys, monkeypatch):
    server, _, _ = served
    home = tmp_path / "cache"
    home.mkdir()
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    (home / "models").symlink_to(elsewhere)
    assert cli.main(["pull", V1, "-q"]) == 1
    _one_line(capsys.readouterr().err, "models", "symbolic link")
    assert list(elsewhere.iterdir()) == [] and server.requests == []
    # a model folder planted as a link is not loaded either
    (home / "models").unlink()
    (home / "models").mkdir()
    (home / "models" / V1).symlink_to(elsewhere)
    song = tmp_path / "s.wav"
    sf.write(song, np.zeros((4410, 2), np.float32), 44100)
    assert cli.main(["separate", str(song), "-m", V1, "-o", str(tmp_path / "o"), "-q"]) == 1
    _one_line(capsys.readouterr().err, "symbolic link")
    # a cache that cannot be made
    blocker = tmp_path / "file"
    blocker.write_text("x")
    monkeypatch.setenv("LIGHTSAFT_HOME", str(blocker / "cache"))
    assert cli.main(["pull", V1, "-q"]) == 1
    _one_line(capsys.readouterr().err, "cannot be created", "LIGHTSAFT_HOME")


def test_a_full_disk_while_downloading_is_one_line(served, small_disk, capsys, monkeypatch):
    monkeypatch.setenv("LIGHTSAFT_HOME", str(small_disk / "cache"))
    assert cli.main(["pull", V1, "-q"]) == 1
    _one_line(capsys.readouterr().err, "disk is full")
    _nothing_loadable(small_disk / "cache", V1)
    assert list((small_disk / "cache" / "downloads").iterdir()) == []


def test_an_unknown_name_is_one_line(served, capsys, tmp_path):
    assert cli.main(["pull", "no-such-model", "-q"]) == 1
    _one_line(capsys.readouterr().err, "no-such-model", V1)
    song = tmp_path / "s.wav"
    sf.write(song, np.zeros((4410, 2), np.float32), 44100)
    assert cli.main(["separate", str(song), "-m", "no-such-model", "-q", "-o", str(tmp_path / "o")]) == 1
    _one_line(capsys.readouterr().err, "neither a weight file", "lightsaft-infer models")


def test_the_readme_and_docs_name_every_model():
    readme = (REPO / "README.md").read_text()
    section = readme.split("## Models", 1)[1].split("\n## ", 1)[0]
    assert section.lstrip().startswith("| name |")  # the Models section starts with the catalogue's table
    docs = (REPO / "docs" / "models.md").read_text()
    for entry in cat.load_catalogue(cat.BUILTIN).entries.values():
        assert f"`{entry.name}`" in docs and entry.commit in docs, entry.name
        assert entry.name.rsplit("-", 1)[0] in section, entry.name
    assert "lightsaft-infer pull" in readme and "-m lasaft-v2-light" in readme

"""`localmodel up` as a user runs it: a subprocess serving generated models on this machine."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import openai
import pytest
from support.local_up import Up, alive, manifest, pvc
from support.model_server import free_port, wait_for
from support.seed import SEED_REQUEST as SEED

pytestmark = pytest.mark.llama


@pytest.fixture
def volume(tmp_path: Path, chat_model: Path, embed_model: Path) -> Path:
    directory = tmp_path / "volume"
    directory.mkdir()
    shutil.copy(chat_model, directory / "chat.gguf")
    shutil.copy(embed_model, directory / "embed.gguf")
    return directory


@pytest.fixture
def two_models(tmp_path: Path) -> Path:
    manifests = tmp_path / "manifests"
    manifests.mkdir()
    (manifests / "chat.yaml").write_text(manifest("chat", pvc("chat.gguf"), aliases=["llama3"], contextSize=1024))
    (manifests / "embed.yaml").write_text(manifest("embed", pvc("embed.gguf")))
    return manifests


def test_up_serves_two_models_and_ctrl_c_leaves_nothing_running(tmp_path, volume, two_models):
    up = Up(tmp_path, [two_models], volume=volume)
    try:
        up.wait_serving()
        assert "ready: chat (aliases: llama3), embed" in up.output()
        assert up.servers() == {}  # nothing is loaded before a request names it

        client = openai.OpenAI(base_url=f"{up.base_url}/v1", api_key="unused", max_retries=0)
        assert {m.id for m in client.models.list().data} >= {"chat", "llama3", "embed"}
        reply = client.chat.completions.create(model="chat", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
        assert reply.usage.completion_tokens == 4
        embedding = client.embeddings.create(model="embed", input=["a", "b"])
        assert len(embedding.data) == 2 and len(embedding.data[0].embedding) == 64

        seed = httpx.post(f"{up.base_url}/v1/chat/completions", json=SEED, timeout=120)
        assert seed.status_code == 200, seed.text
        body = seed.json()
        assert body["choices"][0]["message"]["content"] and body["choices"][0]["finish_reason"]
        assert body["usage"]["total_tokens"] == body["usage"]["prompt_tokens"] + body["usage"]["completion_tokens"]

        pids = [up.proc.pid, *up.servers().values()]
        assert len(pids) == 3
        assert wait_for(lambda: all(m["status"] == "loaded" for m in up.state()["models"]), timeout=5)
        ps = subprocess.run([sys.executable, "-m", "localmodel_server.local.cli", "--cache-dir", str(up.cache), "ps"],
                            capture_output=True, text=True, check=True).stdout
        assert "chat (llama3)" in ps and "loaded" in ps and "0/4" in ps and "min from now" in ps
    finally:
        code = up.stop(signal.SIGINT)
    assert code == 0, up.output()
    assert "stopped" in up.output()
    assert not any(alive(p) for p in pids)
    assert not (up.cache / "run" / "up.json").exists()


def test_restart_downloads_nothing_again(tmp_path, http_faults, chat_model):
    http_faults.add_file("/chat.gguf", chat_model)
    digest = hashlib.sha256(chat_model.read_bytes()).hexdigest()
    file = tmp_path / "remote.yaml"
    file.write_text(manifest("remote", {"url": f"{http_faults.base_url}/chat.gguf", "sha256": digest}))

    for attempt in range(2):
        up = Up(tmp_path, [file])
        try:
            up.wait_serving()
        finally:
            assert up.stop(signal.SIGTERM) == 0
        served = http_faults.files["/chat.gguf"].bytes_served
        assert served == chat_model.stat().st_size, f"attempt {attempt}: {served} bytes served"

    listing = subprocess.run([sys.executable, "-m", "localmodel_server.local.cli", "--cache-dir", str(up.cache), "list"],
                             capture_output=True, text=True, check=True).stdout
    assert "default/remote" in listing and digest[:16] in listing


def test_a_failing_model_is_reported_and_the_other_keeps_serving(tmp_path, volume, http_faults, chat_model):
    digest = "0" * 64
    manifests = tmp_path / "mixed"
    manifests.mkdir()
    (manifests / "good.yaml").write_text(manifest("good", pvc("chat.gguf")))
    (manifests / "broken.yaml").write_text(
        manifest("broken", {"url": f"{http_faults.base_url}/missing.gguf", "sha256": digest}))
    up = Up(tmp_path, [manifests], volume=volume)
    try:
        up.wait_serving()
        assert "not serving broken" in up.output() and "SourceNotFound" in up.output()
        ok = httpx.post(f"{up.base_url}/v1/chat/completions",
                        json={"model": "good", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2})
        assert ok.status_code == 200
        broken = httpx.post(f"{up.base_url}/v1/chat/completions",
                            json={"model": "broken", "messages": [{"role": "user", "content": "x"}]})
        assert broken.status_code == 503 and "retry-after" in broken.headers
        assert "SourceNotFound" in broken.json()["error"]["message"]
        unknown = httpx.post(f"{up.base_url}/v1/chat/completions",
                             json={"model": "nope", "messages": [{"role": "user", "content": "x"}]})
        assert unknown.status_code == 404 and unknown.json()["error"]["code"] == "model_not_found"
    finally:
        assert up.stop() == 0


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "localmodel_server.local.cli", "--cache-dir", str(tmp_path / "c"), *args],
                          capture_output=True, text=True, timeout=120)


def test_invalid_manifest_names_the_file_and_field(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text(manifest("bad", {"url": "https://example.com/x.gguf"}, replicas=-1))
    result = run_cli(tmp_path, "up", str(bad))
    assert result.returncode == 2
    assert str(bad) in result.stderr and "spec.replicas" in result.stderr
    assert "Traceback" not in result.stderr


def test_keep_alive_is_checked_in_the_manifest_and_on_the_command_line(tmp_path):
    bad = tmp_path / "bad-keep-alive.yaml"
    bad.write_text(manifest("lazy", {"url": "https://example.com/x.gguf"}, keepAlive="5 minutes"))
    result = run_cli(tmp_path, "up", str(bad))
    assert result.returncode == 2 and "spec.keepAlive" in result.stderr and "Traceback" not in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text(manifest("lazy", {"url": "https://example.com/x.gguf"}, keepAlive="1h30m"))
    result = run_cli(tmp_path, "up", str(good), "--keep-alive", "soon")
    assert result.returncode == 2 and "--keep-alive: keep-alive 'soon' is not a duration" in result.stderr


def test_cel_rule_violation_uses_the_crd_message(tmp_path):
    bad = tmp_path / "two-sources.yaml"
    bad.write_text(manifest("two", {"url": "https://example.com/x.gguf", **pvc("x.gguf")}))
    result = run_cli(tmp_path, "up", str(bad))
    assert result.returncode == 2
    assert "spec.source: source must set exactly one of hf, url, s3, pvc, ollama or oci" in result.stderr


def test_busy_port_is_a_clear_error(tmp_path, volume, two_models):
    import socket

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        result = run_cli(tmp_path, "up", str(two_models), "--port", str(port), "--volume", f"models={volume}")
    assert result.returncode == 2
    assert f"127.0.0.1:{port} is already in use" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_secret_is_a_clear_error(tmp_path):
    private = tmp_path / "private.yaml"
    private.write_text(manifest("private", {"hf": {"repo": "org/model", "quant": "Q4_K_M"},
                                                  "secretRef": {"name": "hf-token"}}))
    env = {**os.environ, "LOCALMODEL_CONFIG_DIR": str(tmp_path / "config")}
    result = subprocess.run([sys.executable, "-m", "localmodel_server.local.cli", "--cache-dir", str(tmp_path / "c"),
                             "up", str(private)], capture_output=True, text=True, timeout=120, env=env)
    assert result.returncode == 2
    assert "needs the Secret 'hf-token'" in result.stderr and "hf-token.env" in result.stderr


def test_detach_then_down(tmp_path, volume, two_models):
    cache = tmp_path / "cache"
    port = free_port()
    up = subprocess.run([sys.executable, "-m", "localmodel_server.local.cli", "--cache-dir", str(cache), "up",
                         str(two_models), "--port", str(port), "--volume", f"models={volume}", "--detach"],
                        capture_output=True, text=True, timeout=180)
    assert up.returncode == 0, up.stderr
    assert f"serving http://127.0.0.1:{port}/v1" in up.stdout
    state = json.loads((cache / "run" / "up.json").read_text())
    assert httpx.get(f"http://127.0.0.1:{port}/v1/models").status_code == 200
    down = subprocess.run([sys.executable, "-m", "localmodel_server.local.cli", "--cache-dir", str(cache), "down"],
                          capture_output=True, text=True, timeout=120)
    assert down.returncode == 0 and "stopped" in down.stdout
    assert not alive(state["pid"])


def test_a_server_that_dies_is_reported_and_loaded_again_by_the_next_request(tmp_path, volume, two_models):
    up = Up(tmp_path, [two_models], "--preload", volume=volume)
    try:
        up.wait_serving()
        servers = up.servers()
        assert set(servers) == {"chat", "embed"}  # --preload: loaded before any request
        os.kill(servers["chat"], signal.SIGKILL)
        assert wait_for(lambda: "chat stopped unexpectedly" in up.output(), timeout=10), up.output()

        card = httpx.get(f"{up.base_url}/v1/models/llama3").json()
        assert card["status"].startswith("failed:") and "exited" in card["status"]
        embedding = httpx.post(f"{up.base_url}/v1/embeddings", json={"model": "embed", "input": "still here"})
        assert embedding.status_code == 200

        again = httpx.post(f"{up.base_url}/v1/chat/completions", timeout=60,
                           json={"model": "llama3", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2})
        assert again.status_code == 200, again.text
        assert up.servers()["chat"] != servers["chat"]
    finally:
        assert up.stop() == 0


def test_list_shows_the_served_models_including_pvc_sources_used_in_place(tmp_path, volume, two_models):
    up = Up(tmp_path, [two_models], volume=volume)
    try:
        up.wait_serving()
        listing = subprocess.run([sys.executable, "-m", "localmodel_server.local.cli", "--cache-dir", str(up.cache),
                                  "list"], capture_output=True, text=True, check=True).stdout
    finally:
        assert up.stop() == 0
    rows = {line.split()[0]: line for line in listing.splitlines()[1:]}
    assert set(rows) == {"default/chat", "default/embed"}, listing
    for name, file in (("chat", "chat.gguf"), ("embed", "embed.gguf")):
        digest = hashlib.sha256((volume / file).read_bytes()).hexdigest()
        assert digest[:16] in rows[f"default/{name}"] and f"pvc:models/{file}" in rows[f"default/{name}"]
        assert "MiB" in rows[f"default/{name}"]

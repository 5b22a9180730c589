"""Run inside the cluster by test_serving.py (python3 -c, in a pod of the server image):
the calls an in-cluster app makes against the router's Service, with the standard
library only. Prints one JSON object with what it saw."""

import json
import sys
import urllib.error
import urllib.request

BASE = sys.argv[1]
SEED = {
    "model": "llama3",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
}


def call(method, path, body=None):
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(BASE + path, data=data, method=method,
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=120) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


seen = {}
status, body = call("GET", "/models")
seen["models"] = {"status": status, "ids": sorted(m["id"] for m in json.loads(body)["data"])}
status, body = call("POST", "/chat/completions", {**SEED, "max_tokens": 16})
chat = json.loads(body)
seen["chat"] = {"status": status, "content": chat["choices"][0]["message"]["content"], "usage": chat["usage"]}
status, body = call("POST", "/chat/completions", {**SEED, "max_tokens": 16, "stream": True,
                                                  "stream_options": {"include_usage": True}})
events = [line[len("data: "):] for line in body.splitlines() if line.startswith("data: ")]
seen["stream"] = {"status": status, "events": len(events), "done": events[-1] == "[DONE]",
                  "usage": json.loads(events[-2]).get("usage")}
status, body = call("POST", "/embeddings", {"model": "tiny-embed", "input": ["hello world", "bonjour"]})
seen["embeddings"] = {"status": status, "vectors": [len(item["embedding"]) for item in json.loads(body)["data"]]}
status, body = call("POST", "/chat/completions", {**SEED, "model": "no-such-model"})
seen["unknown"] = {"status": status, "error": json.loads(body)["error"]}
print(json.dumps(seen))

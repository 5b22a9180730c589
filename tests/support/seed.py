"""The seed's chat request: what every entry point of localmodel must answer, verbatim."""

SEED_REQUEST = {
    "model": "llama3",
    "messages": [
        {"role": "system", "content": "You are a helpful assistant."},
        {"role": "user", "content": "What is the capital of France?"},
    ],
}

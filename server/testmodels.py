"""Generate random-weight GGUF models for tests, demos and benchmarks.

Nothing is downloaded from a model hub: the tokenizer is copied from the
vocab-only GGUF files that llama.cpp's sources ship (inside the
llama-cpp-python sdist, fetched once from PyPI and cached), and the weights are
random. llama.cpp loads these files like any other and generates real tokens;
the text is gibberish.

Weights are drawn with a large standard deviation so that logits are peaked:
greedy decoding then does not flip on float noise, and a test that compares
outputs (alone vs. batched) detects real bugs rather than rounding.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import gguf
import numpy as np

LLAMA_CPP_PYTHON_VERSION = "0.3.36"
VOCAB_FILES = {"llama-spm": "ggml-vocab-llama-spm.gguf", "bert-bge": "ggml-vocab-bert-bge.gguf"}

# A ChatML template: simple, widely used, and it renders tools.
CHAT_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + (message['content'] or '') + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)


@dataclass(frozen=True)
class LlamaShape:
    n_embd: int = 64
    n_layer: int = 2
    n_head: int = 4
    n_head_kv: int = 2
    n_ff: int = 128
    context_length: int = 4096
    std: float = 0.2


TINY_CHAT = LlamaShape()
# About 0.47B parameters: realistic compute for benchmarks on CPU.
BENCH_CHAT = LlamaShape(n_embd=1024, n_layer=24, n_head=16, n_head_kv=8, n_ff=4096, context_length=4096, std=0.02)
# Llama-3-8B's layer shapes (with the small test vocabulary): GPU benchmarks.
BENCH_8B = LlamaShape(n_embd=4096, n_layer=32, n_head=32, n_head_kv=8, n_ff=14336, context_length=8192, std=0.02)


def cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "localmodel"


def vocab_path(name: str) -> Path:
    """Path of a llama.cpp vocab-only GGUF, extracted once from the sdist."""
    filename = VOCAB_FILES[name]
    override = os.environ.get("LOCALMODEL_VOCAB_DIR")
    if override:
        return Path(override) / filename
    target = cache_dir() / "vocab" / LLAMA_CPP_PYTHON_VERSION / filename
    if not target.exists():
        _extract_vocab_files(target.parent)
    return target


def _extract_vocab_files(dest: Path) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        subprocess.run(
            [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
             "-d", tmp, f"llama-cpp-python=={LLAMA_CPP_PYTHON_VERSION}"],
            check=True,
        )
        sdist = next(Path(tmp).glob("llama_cpp_python-*.tar.gz"))
        with tarfile.open(sdist) as tar:
            for member in tar.getmembers():
                name = Path(member.name).name
                if name in VOCAB_FILES.values() and "/vendor/llama.cpp/models/" in member.name:
                    source = tar.extractfile(member)
                    assert source is not None
                    partial = dest / f".{name}.partial"
                    partial.write_bytes(source.read())
                    partial.replace(dest / name)


def _copy_tokenizer(writer: gguf.GGUFWriter, vocab_file: Path) -> int:
    """Copy every tokenizer.* key from a vocab-only GGUF; return the vocab size."""
    reader = gguf.GGUFReader(vocab_file)
    n_vocab = 0
    for field in reader.fields.values():
        if not field.name.startswith("tokenizer."):
            continue
        value = field.contents()
        if field.types[0] == gguf.GGUFValueType.ARRAY:
            writer.add_array(field.name, value)
            if field.name == "tokenizer.ggml.tokens":
                n_vocab = len(value)
        else:
            writer.add_key_value(field.name, value, field.types[0])
    return n_vocab


def _weights(rng: np.random.Generator, shape: tuple[int, ...], std: float, dtype: type = np.float16) -> np.ndarray:
    return (rng.standard_normal(shape, dtype=np.float32) * std).astype(dtype)


def write_llama(path: Path, shape: LlamaShape = TINY_CHAT, *, seed: int = 0, name: str = "tiny-chat") -> Path:
    """A llama-architecture chat model with a ChatML template and F16 weights."""
    rng = np.random.default_rng(seed)
    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name(name)
    writer.add_context_length(shape.context_length)
    writer.add_embedding_length(shape.n_embd)
    writer.add_block_count(shape.n_layer)
    writer.add_feed_forward_length(shape.n_ff)
    writer.add_head_count(shape.n_head)
    writer.add_head_count_kv(shape.n_head_kv)
    writer.add_rope_dimension_count(shape.n_embd // shape.n_head)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = _copy_tokenizer(writer, vocab_path("llama-spm"))
    writer.add_chat_template(CHAT_TEMPLATE)

    d, kv = shape.n_embd, shape.n_embd // shape.n_head * shape.n_head_kv
    writer.add_tensor("token_embd.weight", _weights(rng, (n_vocab, d), shape.std))
    for i in range(shape.n_layer):
        blk = f"blk.{i}"
        writer.add_tensor(f"{blk}.attn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(f"{blk}.attn_q.weight", _weights(rng, (d, d), shape.std))
        writer.add_tensor(f"{blk}.attn_k.weight", _weights(rng, (kv, d), shape.std))
        writer.add_tensor(f"{blk}.attn_v.weight", _weights(rng, (kv, d), shape.std))
        writer.add_tensor(f"{blk}.attn_output.weight", _weights(rng, (d, d), shape.std))
        writer.add_tensor(f"{blk}.ffn_norm.weight", np.ones(d, dtype=np.float32))
        writer.add_tensor(f"{blk}.ffn_gate.weight", _weights(rng, (shape.n_ff, d), shape.std))
        writer.add_tensor(f"{blk}.ffn_up.weight", _weights(rng, (shape.n_ff, d), shape.std))
        writer.add_tensor(f"{blk}.ffn_down.weight", _weights(rng, (d, shape.n_ff), shape.std))
    writer.add_tensor("output_norm.weight", np.ones(d, dtype=np.float32))
    writer.add_tensor("output.weight", _weights(rng, (n_vocab, d), shape.std))
    _finish(writer, path)
    return path


def write_bert(path: Path, *, n_embd: int = 64, n_layer: int = 2, n_head: int = 4, seed: int = 0) -> Path:
    """A BERT-architecture embedding model (mean pooling) with the bert-bge vocab."""
    rng = np.random.default_rng(seed)
    n_ff, n_ctx, std = 4 * n_embd, 512, 0.2
    writer = gguf.GGUFWriter(str(path), "bert")
    writer.add_name("tiny-embed")
    writer.add_context_length(n_ctx)
    writer.add_embedding_length(n_embd)
    writer.add_block_count(n_layer)
    writer.add_feed_forward_length(n_ff)
    writer.add_head_count(n_head)
    writer.add_layer_norm_eps(1e-12)
    writer.add_causal_attention(False)
    writer.add_pooling_type(gguf.PoolingType.MEAN)
    writer.add_file_type(gguf.LlamaFileType.MOSTLY_F16)
    n_vocab = _copy_tokenizer(writer, vocab_path("bert-bge"))

    def norm(prefix: str) -> None:
        writer.add_tensor(f"{prefix}.weight", np.ones(n_embd, dtype=np.float32))
        writer.add_tensor(f"{prefix}.bias", np.zeros(n_embd, dtype=np.float32))

    def linear(prefix: str, rows: int, cols: int) -> None:
        writer.add_tensor(f"{prefix}.weight", _weights(rng, (rows, cols), std))
        writer.add_tensor(f"{prefix}.bias", np.zeros(rows, dtype=np.float32))

    writer.add_tensor("token_embd.weight", _weights(rng, (n_vocab, n_embd), std))
    # Added to the token embeddings, which llama.cpp only does in F32.
    writer.add_tensor("token_types.weight", _weights(rng, (2, n_embd), std, np.float32))
    writer.add_tensor("position_embd.weight", _weights(rng, (n_ctx, n_embd), std, np.float32))
    norm("token_embd_norm")
    for i in range(n_layer):
        blk = f"blk.{i}"
        for proj in ("attn_q", "attn_k", "attn_v", "attn_output"):
            linear(f"{blk}.{proj}", n_embd, n_embd)
        norm(f"{blk}.attn_output_norm")
        linear(f"{blk}.ffn_up", n_ff, n_embd)
        linear(f"{blk}.ffn_down", n_embd, n_ff)
        norm(f"{blk}.layer_output_norm")
    _finish(writer, path)
    return path


def _finish(writer: gguf.GGUFWriter, path: Path) -> None:
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()


def quantize(source: Path, dest: Path, ftype: int | None = None) -> Path:
    """Quantize with llama.cpp (Q5_0 by default), through llama-cpp-python's binding.

    Q5_0 rather than Q8_0/Q4_0: on AMX CPUs (as on this project's machines)
    llama.cpp's repacked AMX kernels for those types crash, and the baselines
    the benchmarks compare against (llama_cpp.Llama, llama_cpp.server) cannot
    turn repacking off. Q5_0 takes the plain AVX path everywhere.
    """
    import llama_cpp

    params = llama_cpp.llama_model_quantize_default_params()
    params.ftype = llama_cpp.LLAMA_FTYPE_MOSTLY_Q5_0 if ftype is None else ftype
    if llama_cpp.llama_model_quantize(str(source).encode(), str(dest).encode(), params) != 0:
        raise RuntimeError(f"quantizing {source} failed")
    return dest


def write_bench_model(path: Path, shape: LlamaShape = BENCH_CHAT, ftype: int | None = None) -> Path:
    """A benchmark model: by default the ~0.5B-parameter Q5_0 one the CPU benchmarks run on."""
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        f16 = write_llama(Path(tmp) / "bench-f16.gguf", shape, name=path.stem)
        return quantize(f16, path, ftype)


def main() -> None:
    parser = argparse.ArgumentParser(description="Write a random-weight GGUF model.")
    parser.add_argument("kind", choices=["chat", "embed", "bench"])
    parser.add_argument("output", type=Path)
    args = parser.parse_args()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    writer = {"chat": write_llama, "embed": write_bert, "bench": write_bench_model}[args.kind]
    print(writer(args.output))


if __name__ == "__main__":
    main()

"""A tiny, deterministic llama-architecture GGUF for the llama.cpp test tier.

Tests need a real model that loads in well under a second and is byte-identical on every
machine, so we generate one instead of downloading one. Vocabulary: ``<unk>``, ``<s>``,
``</s>``, ``<|im_start|>``, ``<|im_end|>``, then the 256 byte tokens ``<0x00>``..``<0xFF>``
(SPM "llama" tokenizer with byte fallback, so one token per byte of text). Weights are random
F32 from a fixed seed. The logits of every token except printable ASCII bytes are pushed far
down, so output is always printable ASCII and never EOS: every generation runs to
``max_tokens`` (``finish_reason`` "length"). Always send ``max_tokens``.

Usage: ``python -m tests.support.tiny_model OUT.gguf [--tool-template]``
"""

from __future__ import annotations

import argparse
from collections.abc import Sequence
from pathlib import Path

import gguf
import numpy as np
import numpy.typing as npt

N_EMBD = 64
"""Embedding width, so also the length of every ``/v1/embeddings`` vector."""
N_CTX = 8192
"""Training context length; llama-server uses it as its context size."""
N_HEAD = 4
N_FF = 128
N_LAYER = 2
SEED = 1234

CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
"""Plain ChatML: ignores ``tools``, so requests with tools render the same prompt."""

TOOL_CHAT_TEMPLATE = (
    "{%- if tools %}<|im_start|>system\n"
    "{% if messages[0].role == 'system' %}{{ messages[0].content }}\n"
    "\n"
    "{% endif %}# Tools\n"
    "\n"
    "You are provided with function signatures within <tools></tools> XML tags:\n"
    "<tools>\n"
    "{%- for tool in tools %}\n"
    "{{ tool | tojson }}\n"
    "{%- endfor %}\n"
    "</tools>\n"
    "\n"
    "For each function call, return a json object with function name and arguments"
    " within <tool_call></tool_call> XML tags:\n"
    "<tool_call>\n"
    '{"name": <function-name>, "arguments": <args-json-object>}\n'
    "</tool_call><|im_end|>\n"
    "{% elif messages[0].role == 'system' %}<|im_start|>system\n"
    "{{ messages[0].content }}<|im_end|>\n"
    "{% endif %}\n"
    "{%- for message in messages %}\n"
    "{%- if message.role == 'user'"
    " or (message.role == 'system' and not loop.first)"
    " or (message.role == 'assistant' and not message.tool_calls)"
    " %}<|im_start|>{{ message.role }}\n"
    "{{ message.content }}<|im_end|>\n"
    "{% elif message.role == 'assistant' %}<|im_start|>assistant\n"
    "{% if message.content %}{{ message.content }}\n"
    "{% endif %}\n"
    "{%- for tc in message.tool_calls %}"
    "{% if tc.function is defined %}{% set tc = tc.function %}{% endif %}<tool_call>\n"
    '{"name": "{{ tc.name }}", "arguments": {{ tc.arguments | tojson }}}\n'
    "</tool_call>\n"
    "{% endfor %}<|im_end|>\n"
    "{% elif message.role == 'tool' %}<|im_start|>user\n"
    "<tool_response>\n"
    "{{ message.content }}\n"
    "</tool_response><|im_end|>\n"
    "{% endif %}\n"
    "{%- endfor %}\n"
    "{%- if add_generation_prompt %}<|im_start|>assistant\n"
    "{% endif %}"
)
"""Hermes/Qwen-style template: renders ``tools`` into the prompt and makes llama.cpp report
tool support. Without tools it renders exactly like :data:`CHATML_TEMPLATE`."""

_SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<|im_start|>", "<|im_end|>"]


def write_tiny_model(path: Path, *, tool_template: bool = False) -> Path:
    """Write the tiny GGUF to ``path`` and return ``path``.

    The same arguments always give the same bytes. ``tool_template`` embeds
    :data:`TOOL_CHAT_TEMPLATE` instead of ChatML, so tool definitions reach the prompt.
    """
    token_type = gguf.TokenType
    tokens = [*_SPECIAL_TOKENS, *(f"<0x{b:02X}>" for b in range(256))]
    types = [token_type.UNKNOWN] + [token_type.CONTROL] * 4 + [token_type.BYTE] * 256
    n_vocab = len(tokens)
    printable = np.array([t.startswith("<0x") and 0x20 <= int(t[3:5], 16) <= 0x7E for t in tokens])

    # A generator local to this call: the draw order below fixes the weights, whatever ran before.
    rng = np.random.default_rng(SEED)

    def rnd(*shape: int, scale: float = 0.02) -> npt.NDArray[np.float32]:
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    # numpy shape is (rows=out, cols=in); gguf stores the reverse (ggml ne order).
    emb = rnd(n_vocab, N_EMBD, scale=0.3)
    emb[:, 0] = 3.0  # a constant channel that dominates after RMS norm ...
    out = rnd(n_vocab, N_EMBD, scale=1.0)
    out[:, 0] = np.where(printable, 0.0, -10.0)  # ... and so bans non-printable tokens

    writer = gguf.GGUFWriter(str(path), "llama")
    writer.add_name("tiny-test-llama")
    writer.add_context_length(N_CTX)
    writer.add_embedding_length(N_EMBD)
    writer.add_block_count(N_LAYER)
    writer.add_feed_forward_length(N_FF)
    writer.add_head_count(N_HEAD)
    writer.add_head_count_kv(N_HEAD)
    writer.add_rope_dimension_count(N_EMBD // N_HEAD)
    writer.add_layer_norm_rms_eps(1e-5)
    writer.add_vocab_size(n_vocab)
    writer.add_file_type(gguf.LlamaFileType.ALL_F32)
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * n_vocab)
    writer.add_token_types(types)
    writer.add_unk_token_id(0)
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)
    writer.add_add_bos_token(False)
    writer.add_add_eos_token(False)
    # Without this, SPM prefixes the text after <|im_start|> with U+2581, the grammar prefill
    # of the generation prompt breaks, and every json_schema/tool request fails with 400.
    writer.add_add_space_prefix(False)
    writer.add_chat_template(TOOL_CHAT_TEMPLATE if tool_template else CHATML_TEMPLATE)

    writer.add_tensor("token_embd.weight", emb)
    writer.add_tensor("output_norm.weight", np.ones(N_EMBD, np.float32))
    writer.add_tensor("output.weight", out)
    for i in range(N_LAYER):
        block = f"blk.{i}."
        writer.add_tensor(block + "attn_norm.weight", np.ones(N_EMBD, np.float32))
        for name in ("attn_q", "attn_k", "attn_v", "attn_output"):
            writer.add_tensor(block + name + ".weight", rnd(N_EMBD, N_EMBD))
        writer.add_tensor(block + "ffn_norm.weight", np.ones(N_EMBD, np.float32))
        writer.add_tensor(block + "ffn_gate.weight", rnd(N_FF, N_EMBD))
        writer.add_tensor(block + "ffn_up.weight", rnd(N_FF, N_EMBD))
        writer.add_tensor(block + "ffn_down.weight", rnd(N_EMBD, N_FF))

    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    return path


def main(argv: Sequence[str] | None = None) -> None:
    """Command-line entry point: write the model to the given path."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("out", type=Path, help="where to write the .gguf file")
    parser.add_argument(
        "--tool-template",
        action="store_true",
        help="embed the Hermes/Qwen tool-aware chat template instead of plain ChatML",
    )
    args = parser.parse_args(argv)
    write_tiny_model(args.out, tool_template=args.tool_template)


if __name__ == "__main__":
    main()

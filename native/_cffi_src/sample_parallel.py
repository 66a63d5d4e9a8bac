"""Our own C helper compiled into the extension: sampling many sequences on several threads.

The C source is sample_parallel.c next to this file; its text is part of the declarations'
digest, so editing it makes the extension stale.
"""

from pathlib import Path

SOURCE = (Path(__file__).with_name("sample_parallel.c")).read_text()

TYPES = """
typedef struct llama_grpc_sample_item {
    struct llama_sampler * chain;
    int32_t idx;
    const float * logits;
    llama_token_data * cand;
    int32_t top_k;
    const llama_token * keep;
    int32_t n_keep;
    llama_token token;
} llama_grpc_sample_item;
"""

FUNCTIONS = """
int llama_grpc_sample_parallel(struct llama_context * ctx, llama_grpc_sample_item * items,
                               int n_items, int n_vocab, int n_threads);
"""

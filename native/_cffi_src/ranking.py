"""Our own C helpers compiled into the extension: ranking a logits row or a candidate array.

The C source is ranking.c next to this file; like sample_parallel.c its text is part of the
declarations' digest.
"""

from pathlib import Path

SOURCE = (Path(__file__).with_name("ranking.c")).read_text()

TYPES = ""

FUNCTIONS = """
int32_t llama_grpc_top_logits(const float * logits, int32_t n, int32_t k, int32_t * out_ids,
                              double * lse);
int32_t llama_grpc_argmax(const float * logits, int32_t n);
void llama_grpc_fill_candidates(llama_token_data * cand, const float * logits, int32_t n);
int32_t llama_grpc_top_by_p(const llama_token_data * data, int32_t n, int32_t k,
                            int32_t * out);
"""

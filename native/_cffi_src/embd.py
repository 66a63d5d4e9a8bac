"""Our own C helper compiled into the extension: an embedding's normalization, rounding as
llama-server's does (service/embedding_vectors.py).

The C source is embd.c next to this file; like the other helpers its text is part of the
declarations' digest.
"""

from pathlib import Path

SOURCE = (Path(__file__).with_name("embd.c")).read_text()

TYPES = ""

FUNCTIONS = """
void llama_grpc_embd_normalize(const float * inp, float * out, int32_t n, int32_t norm);
"""

"""Reading an embedding input's result after its decode (engine thread only).

llama.cpp keeps the outputs of the last decode: a pooled vector per sequence (or a reranker's
class scores, for pooling `rank`), or with pooling `none` one vector per token, at the batch
indices of that sequence's tokens. They are copied out at once, as float32 arrays (no Python float
per value, no numpy: service/embedding_vectors.py): the next decode overwrites them.
"""

from __future__ import annotations

from native import Context
from service.embedding_vectors import float_array
from service.engine.events import Embedded
from service.engine.task import Task

POOLING_NONE = 0  # llama_pooling_type


def read_embedding(ctx: Context, task: Task) -> Embedded:
    """The result of `task`, whose whole prompt ended at batch index `task.out_index`. Raises
    InvalidInputError when llama.cpp holds no such output."""
    assert task.slot is not None
    if ctx.pooling == POOLING_NONE:
        # Never split (service/embeddings.py): every token of the prompt is in this batch,
        # or with media every token of its last text run (the media decoded apart before it)
        first = task.out_index - (task.n_prompt - (task.media[-1].end if task.media else 0)) + 1
        vectors = tuple(float_array(ctx.embeddings_ith(i))
                        for i in range(first, task.out_index + 1))
    else:
        vectors = (float_array(ctx.embeddings_seq(task.slot.id)),)
    return Embedded(vectors, task.n_prompt)

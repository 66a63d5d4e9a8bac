"""Reading an embedding input's result after its decode (engine thread only).

llama.cpp keeps the outputs of the last decode: a pooled vector per sequence (or a reranker's
class scores, for pooling `rank`), or with pooling `none` one vector per token, at the batch
indices of that sequence's tokens. They are copied out at once: the next decode overwrites them.
"""

from __future__ import annotations

from typing import cast

from native import Context
from service.engine.events import Embedded
from service.engine.task import Task

POOLING_NONE = 0  # llama_pooling_type


def read_embedding(ctx: Context, task: Task) -> Embedded:
    """The result of `task`, whose whole prompt ended at batch index `task.out_index`. Raises
    InvalidInputError when llama.cpp holds no such output."""
    assert task.slot is not None
    if ctx.pooling == POOLING_NONE:
        # Never split (service/embeddings.py): every token of the prompt is in this batch.
        first = task.out_index - task.n_prompt + 1
        vectors = tuple(ctx.embeddings_ith(i).tolist()
                        for i in range(first, task.out_index + 1))
    else:
        vectors = (ctx.embeddings_seq(task.slot.id).tolist(),)
    # memoryview.tolist() is typed list[int]; these are float32 views.
    return Embedded(cast(tuple[list[float], ...], vectors), task.n_prompt)

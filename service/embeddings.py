"""Embedding and rerank requests: their inputs as token lists, engine tasks, and responses.

llama-server's rules (tools/server, the pinned version): the inputs come from `input`, else
`content`; an array holding no integer is a list of inputs, anything else one input (strings
tokenized with special tokens added and parsed); an empty list or an input of no tokens is a
400. Pooled vectors are normalized with `embd_normalize` (--embd-normalize, default 2:
Euclidean); with pooling `none` every token's vector is returned as it is. A rerank input is
`[BOS] query [EOS] [SEP] document [EOS]` (each special token where the vocabulary adds it), or
the model's "rerank" template; its score is the first class output.

Every input is one engine task (SeqRequest.embedding) taking a slot: inputs of one request and
of concurrent requests share decodes as far as n_batch and the slots allow.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from llama.v1 import common_pb2, embedding_pb2

from service.embedding_vectors import float32_bytes, normalized, put_floats
from service.engine.events import Embedded
from service.engine.media import MediaSpan
from service.engine.params import CompletionParams, ParamError
from service.engine.task import EventSink, Task
from service.errors import ServiceError
from service.limits import check_prompt_text
from service.media_completion import embedding_media_inputs
from service.media_request import check_request_media
from service.prompt_values import value_to_json
from service.prompts import Json, tokenize_prompt
from service.runtime import Runtime

if TYPE_CHECKING:
    from service.embedding_vectors import FloatArray

# Inputs one request may carry (OpenAI's own limit for /v1/embeddings): a request is answered
# whole, so an unbounded one would hold every slot and its memory for as long as it likes.
MAX_INPUTS = 2048
_EMBED_PARAMS = CompletionParams(n_predict=0, cache_prompt=False)
_POOLING_NONE = 0
_POOLING_LAST = 3
_POOLING_RANK = 4


@dataclass(frozen=True)
class EmbedJob:
    prompts: list[list[int]]
    normalize: int
    base64: bool
    media: tuple[tuple[MediaSpan, ...], ...] = ()  # each input's (service/media_completion.py)


def check_embeddings(rt: Runtime, oai: bool) -> None:
    """llama-server's refusals before a request is read."""
    if not rt.config.context.embeddings:
        raise ServiceError("unimplemented", "This server does not support embeddings. Start "
                           "it with `--embeddings`")
    if oai and rt.ctx.pooling == _POOLING_NONE:
        raise ServiceError("invalid_argument", "Pooling type 'none' is not OAI compatible. "
                           "Please use a different pooling type")


def check_reranking(rt: Runtime) -> None:
    ctx = rt.config.context
    if not (ctx.embeddings and ctx.pooling == "rank"):
        raise ServiceError("unimplemented", "This server does not support reranking. Start it "
                           "with `--reranking`")


def embed_job(rt: Runtime, request: Any) -> EmbedJob:
    """The request's inputs as token lists (checked), its normalization and encoding."""
    check_request_media(rt, request)
    fmt = request.encoding_format
    if fmt not in ("", "float", "base64"):
        raise ParamError("The format to return the embeddings in. Can be either float or base64")
    normalize = (request.embd_normalize if request.HasField("embd_normalize")
                 else rt.config.endpoints.embd_normalize)
    if normalize < -1:  # a negative p-norm would divide by a zero component
        raise ParamError("embd_normalize must be -1 (none), 0 (max absolute), 1 (taxicab), "
                         "2 (Euclidean) or a larger p-norm")
    prompts, media = _inputs(rt, request)
    return EmbedJob(prompts, normalize, fmt == "base64", media)


def _inputs(rt: Runtime, request: Any) -> tuple[list[list[int]], tuple[tuple[MediaSpan, ...],
                                                                         ...]]:
    vocab = rt.model.vocab
    if request.HasField("input") or request.HasField("content"):
        value = value_to_json(request, "input" if request.HasField("input") else "content")
        if value is None:
            raise ParamError('"input" or "content" must be provided')
        entries = split_inputs(value)
    elif request.HasField("typed_input"):
        entries = [[piece.text if piece.HasField("text") else list(piece.tokens.ids)
                    for piece in tp.pieces] for tp in request.typed_input.prompts]
        entries = [_flatten(e) for e in entries]
    else:
        raise ParamError('"input" or "content" must be provided')
    if not entries:
        raise ParamError('"input" must not be empty')
    if len(entries) > MAX_INPUTS:
        raise ParamError(f"too many inputs: {len(entries)}; at most {MAX_INPUTS} a request")
    with_media = embedding_media_inputs(rt, request, entries, can_split(rt))
    if with_media is not None:
        return with_media
    prompts = []
    for entry in entries:
        if isinstance(entry, dict):
            raise ParamError("inputs with content parts need a multimodal model; this server "
                             "has none")
        tokens = tokenize_prompt(entry, vocab, add_special=True, parse_special=True)
        if not tokens:
            raise ParamError("Input content cannot be empty")
        prompts.append(tokens)
    return prompts, ()


def _flatten(parts: list[Any]) -> list[Any]:
    out: list[Any] = []
    for p in parts:
        if isinstance(p, list):
            out.extend(p)
        else:
            out.append(p)
    return out


def split_inputs(value: Json) -> list[Json]:
    """llama-server's reading: an array holding no integer is a list of inputs; a string, or
    an array with an integer (token ids, or ids mixed with strings), is one input."""
    if isinstance(value, list) and not any(_is_int(v) for v in value):
        return list(value)
    if isinstance(value, str | list):
        return [value]
    raise ParamError('"input" must be a string, an array of strings or token ids, or an '
                     "array of such inputs")


def _is_int(v: Json) -> bool:
    # Every JSON number reaches us as a double: an integral one stands for an integer.
    return isinstance(v, int | float) and not isinstance(v, bool) and float(v).is_integer()


def rerank_prompts(rt: Runtime, request: Any) -> list[list[int]]:
    """One input per document: the query and the document, as llama-server joins them."""
    if not request.query:
        raise ParamError('"query" must be provided')
    documents = list(request.documents or request.texts)
    if not documents:
        raise ParamError('"documents" must be a non-empty string array')
    if len(documents) > MAX_INPUTS:
        raise ParamError(f"too many documents: {len(documents)}; at most {MAX_INPUTS} a request")
    # top_n 0 asks for no results (llama-server answers an empty list); below 0 it fails
    if request.HasField("top_n") and request.top_n < 0:
        raise ParamError("top_n must be a positive number of results (or 0 for none)")
    vocab = rt.model.vocab
    for text in (request.query, *documents):
        check_prompt_text(text, "query" if text is request.query else "documents")
    template = rt.model.chat_template("rerank")
    if template is not None:
        return [vocab.tokenize(template.replace("{query}", request.query)
                               .replace("{document}", doc), add_special=False,
                               parse_special=True) for doc in documents]
    eos = vocab.eos if vocab.eos >= 0 else vocab.sep
    head = [vocab.bos] if vocab.add_bos else []
    query = vocab.tokenize(request.query, add_special=False, parse_special=False)
    mid = ([eos] if vocab.add_eos else []) + ([vocab.sep] if vocab.add_sep else [])
    tail = [eos] if vocab.add_eos else []
    return [head + query + mid + vocab.tokenize(doc, add_special=False, parse_special=False)
            + tail for doc in documents]


def make_tasks(rt: Runtime, gen_id: str, prompts: Sequence[list[int]],
               sink_for: Callable[[int], EventSink],
               media: Sequence[tuple[MediaSpan, ...]] = ()) -> list[Task]:
    splittable = can_split(rt)
    tasks = []
    for i, prompt in enumerate(prompts):
        task = Task(f"{gen_id}-{i}", prompt, _EMBED_PARAMS, sink_for(i))
        task.embedding, task.splittable = True, splittable
        if media:
            task.media = media[i]
        tasks.append(task)
    return tasks


def can_split(rt: Runtime) -> bool:
    """Whether an input may span decodes (llama-server's rule): only where the result is read
    at the last token of a model that keeps a memory (pooling `last`, or `rank` of a causal
    reranker, which has a memory); mean, cls and none pool over one ubatch."""
    return rt.ctx.has_memory and rt.ctx.pooling in (_POOLING_LAST, _POOLING_RANK)


# -- responses ------------------------------------------------------------------------------
def _vectors(rt: Runtime, result: Embedded, norm: int) -> Sequence[FloatArray]:
    if rt.ctx.pooling == _POOLING_NONE:
        return result.vectors
    return [normalized(result.vectors[0], norm)]


def embed_response(rt: Runtime, job: EmbedJob, results: Sequence[Embedded]) -> Any:
    resp = embedding_pb2.EmbedResponse()
    for i, r in enumerate(results):
        item = resp.results.add(index=i, tokens_evaluated=r.n_tokens)
        for v in _vectors(rt, r, job.normalize):
            put_floats(item.embedding.add(), "values", v)
    return resp


def openai_response(rt: Runtime, request: Any, job: EmbedJob,
                    results: Sequence[Embedded]) -> Any:
    data = []
    for i, r in enumerate(results):
        vector = normalized(r.vectors[0], job.normalize)
        item = embedding_pb2.OpenAIEmbedding(object="embedding", index=i)
        if job.base64:
            item.embedding_base64 = float32_bytes(vector)
        else:
            put_floats(item, "embedding", vector)
        data.append(item)
    n = sum(r.n_tokens for r in results)
    return embedding_pb2.OpenAIEmbedResponse(
        object="list", data=data, model=request.model or rt.model_name,
        usage=common_pb2.InputUsage(prompt_tokens=n, total_tokens=n))


def rerank_response(rt: Runtime, request: Any, results: Sequence[Embedded]) -> Any:
    documents = list(request.documents or request.texts)
    scored = sorted(((float(r.vectors[0][0]), i) for i, r in enumerate(results)),
                    key=lambda s: -s[0])  # stable: equal scores keep document order
    top_n = request.top_n if request.HasField("top_n") else len(documents)
    with_text = bool(request.texts) and not request.documents and request.return_text
    out = []
    for score, i in scored[:top_n]:
        item = embedding_pb2.RerankResult(index=i, relevance_score=score)
        if with_text:
            item.text = documents[i]
        out.append(item)
    n = sum(r.n_tokens for r in results)
    return embedding_pb2.RerankResponse(
        model=request.model or rt.model_name, object="list",
        usage=common_pb2.InputUsage(prompt_tokens=n, total_tokens=n), results=out)


def check_generation(rt: Runtime) -> None:
    """--embedding restricts the server to embeddings (as llama-server did when it documented
    the flag so): the generation RPCs answer this."""
    if rt.config.context.embeddings:
        raise ServiceError("unimplemented", "This server does not support completions. Start "
                           "it without `--embeddings`")

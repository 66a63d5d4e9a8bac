"""One typed generation request, built once from a Completion, OpenAI completion or chat
request: its prompts as tokens and its parameters with every alias resolved and the server's
defaults applied. Building it tokenizes, renders templates and converts JSON schemas, so the
servicer runs it off the event loop (service.offload) unless the request is small."""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from service.chat_render import render_chat_full, template_generation_prompt, with_prefill
from service.chat_sink import parsing_sink
from service.engine.chains import build_task_chain
from service.engine.media import MediaSpan
from service.engine.params import CompletionParams, ParamError
from service.engine.task import EventSink, Task
from service.errors import context_overflow
from service.generation import new_request_id
from service.grammar_limits import check_grammar
from service.infill import InfillBudget, check_fim_support, infill_inputs, infill_prompt
from service.json_schema_answer import chat_answer_grammar, schema_requested
from service.limits import check_prompt_text
from service.media_completion import completion_media_prompts
from service.media_prompt import media_prompt
from service.media_request import checked_media
from service.messages import chat_format_name
from service.prompt_values import prompt_json, token_prompts
from service.prompts import split_prompts, tokenize_prompt
from service.request_params import choices_of, completion_params
from service.runtime import Runtime
from service.tool_calls import ChatSetup, chat_setup
from service.typed_inputs import tool_json


@dataclass(frozen=True)
class GenerationRequest:
    id: str
    prompts: tuple[list[int], ...]
    params: CompletionParams
    stream: bool
    priority: int = 0  # lower is admitted sooner (the scheduler's queue order)
    chat: ChatSetup | None = None  # chat: how the answer is parsed (service.tool_calls)
    n_choices: int = 1  # choices per prompt (n, n_cmpl): task i * n_choices + j is prompt i's
    # Each prompt's media (service/media_prompt.py), () for a request without any.
    media: tuple[tuple[MediaSpan, ...], ...] = ()

    def prompt_of(self, index: int) -> list[int]:
        """The prompt of the task (choice) at `index`."""
        return self.prompts[index // self.n_choices]


_REQUEST_ID = re.compile(r"[\x21-\x7e]{1,128}")


def generation_id(req: Any, prefix: str) -> str:
    """The client's `request_id` (checked), or a minted `<prefix>-…`."""
    if not req.HasField("request_id"):
        return new_request_id(prefix)
    if not _REQUEST_ID.fullmatch(req.request_id):
        raise ParamError("request_id must be 1 to 128 printable ASCII characters without "
                         "spaces", field="request_id")
    return str(req.request_id)


def _checked(rt: Runtime, prompts: list[list[int]]) -> tuple[list[int], ...]:
    n_ctx = rt.engine.n_ctx_slot
    for p in prompts:
        if not p:
            raise ParamError("the prompt is empty")
        if len(p) >= n_ctx:
            raise context_overflow(len(p), n_ctx)
    return tuple(prompts)


def build_completion(rt: Runtime, req: Any, gen_id: str) -> GenerationRequest:
    """For Completion and OpenAICompletion (one CompletionRequest message)."""
    vocab = rt.model.vocab
    params = completion_params(req, rt.request_defaults, vocab)
    prompts = token_prompts(req, vocab.n_tokens)
    media: tuple[tuple[MediaSpan, ...], ...] = ()
    if prompts is None:
        split = split_prompts(prompt_json(req))
        found = completion_media_prompts(rt, req, split)
        if found is not None:
            prompts, media = found
        else:
            prompts = [tokenize_prompt(p, vocab) for p in split]
    return GenerationRequest(gen_id, _checked(rt, prompts), params, req.stream, _priority(req),
                             n_choices=choices_of(req, rt.n_slots), media=media)


def _priority(req: Any) -> int:
    return int(req.priority) if req.HasField("priority") else 0


def openai_refusal(req: Any) -> str:
    """Why llama-server's /v1/completions refuses this request ("" if it does not)."""
    if req.echo:
        return "Only no echo is supported"
    for name in ("best_of", "suffix"):
        if req.HasField(name):
            return f"Unsupported param: {name}"
    return ""


def build_openai_completion(rt: Runtime, req: Any, gen_id: str) -> GenerationRequest:
    refused = openai_refusal(req)
    if refused:
        raise ParamError(refused)
    return build_completion(rt, req, gen_id)


def build_infill(rt: Runtime, req: Any, gen_id: str) -> GenerationRequest:
    """For Infill: the fill-in-the-middle prompt of service.infill, one prompt per request."""
    vocab = rt.model.vocab
    check_fim_support(vocab)  # before anything else, as llama-server checks the model first
    if req.image_data and rt.projector is not None:
        raise ParamError("image_data in /infill is not supported yet", field="image_data")
    params = completion_params(req, rt.request_defaults, vocab)
    prefix, suffix, extra, prompt = infill_inputs(req)
    check_prompt_text("".join([prefix, suffix, prompt, *(text for _, text in extra)]))
    budget = InfillBudget(rt.config.context.n_batch, rt.defaults.n_predict,
                          rt.engine.n_ctx_slot, rt.config.endpoints.spm_infill)
    tokens = infill_prompt(vocab, prefix, suffix, extra,
                           vocab.tokenize(prompt, add_special=False, parse_special=True), budget)
    return GenerationRequest(gen_id, _checked(rt, [tokens]), params, req.stream, _priority(req),
                             n_choices=choices_of(req, rt.n_slots))


def build_chat(rt: Runtime, req: Any, gen_id: str) -> GenerationRequest:
    """For ChatCompletion: the messages rendered with the chat template, then tokenized as a
    text prompt (BOS as the model wants it)."""
    params = completion_params(req, rt.request_defaults, rt.model.vocab)
    rendered = render_chat_full(rt, req)
    text = rendered.prompt
    # Media were checked before the build; taken again here, once a projector can take them.
    media = checked_media(rt, req) if rt.projector is not None else []
    if media and req.image_data:  # its [img-<id>] would be in the rendered text: not carried
        raise ParamError("image_data in a chat request is not supported: send the images as "
                         "image_url content parts", field="image_data")
    spans: tuple[MediaSpan, ...] = ()
    if media:
        prompt, spans = media_prompt(rt, text, media, "messages")
    else:
        prompt = tokenize_prompt(text, rt.model.vocab)
    tools = [tool_json(t) for t in req.tools] or None
    template = rt.templates.for_request(tools)
    chat = with_prefill(chat_setup(req, tools, template, text,
                                   rt.config.chat.reasoning_format,
                                   rt.config.chat.skip_chat_parsing, rt.model.vocab,
                                   rt.config.chat.reasoning_budget,
                                   rt.config.chat.reasoning_budget_message), rendered)
    if chat.grammar and not (chat.lazy and params.sampling.grammar):
        if params.sampling.grammar:
            raise ParamError("tool_choice asks for tool calls, which cannot be combined with "
                             "grammar, json_schema or response_format", field="tool_choice")
        params = replace(params, sampling=replace(params.sampling, grammar=chat.grammar,
                                                  grammar_lazy=chat.lazy is not None))
    if chat.preserved_tokens:
        params = replace(params, keep_special=chat.preserved_tokens)
    if params.sampling.grammar and rt.config.chat.use_jinja and schema_requested(req):
        chat, params = _json_answer(chat, params)
    params = replace(params, chat_format=chat_format_name(template.source,
                                                          rt.config.chat.use_jinja),
                     generation_prompt=template_generation_prompt(rt, req, tools)
                     + chat.parse.prefix)
    if chat.budget is not None and params.sampling.grammar:
        # a grammar (even a lazy one, once triggered) could refuse a forced end tag, and
        # libllama ends the process then: the grammar rules the answer, with no budget
        chat = replace(chat, budget=None)
    return GenerationRequest(gen_id, _checked(rt, [prompt]), params, req.stream, _priority(req),
                             chat, choices_of(req, rt.n_slots), (spans,) if spans else ())


def _json_answer(chat: ChatSetup, params: CompletionParams) -> tuple[ChatSetup,
                                                                      CompletionParams]:
    """A schema's answer framed as llama-server frames it for a Jinja template (whitespace, an
    optional ```json fence), the frame parsed off the content (service.json_schema_answer)."""
    grammar = chat_answer_grammar(params.sampling.grammar)
    check_grammar(grammar)
    return (replace(chat, parse=replace(chat.parse, json_answer=True)),
            replace(params, sampling=replace(params.sampling, grammar=grammar)))


def _choice_params(params: CompletionParams, j: int) -> CompletionParams:
    """Choice j's parameters: a fixed seed moves on by j (the choices differ, reproducibly;
    greedy ones are the same), and only the first choice keeps a requested id_slot."""
    if j == 0:
        return params
    seed = params.sampling.seed
    sampling = params.sampling if seed < 0 else replace(params.sampling,
                                                        seed=(seed + j) & 0xFFFFFFFF)
    return replace(params, sampling=sampling, id_slot=-1)


def make_tasks(rt: Runtime, gen: GenerationRequest,
               sink_for: Callable[[int], EventSink]) -> list[Task]:
    """One engine task per prompt. With a grammar, each gets its sampler chain here (each
    prompt needs its own: chains keep state), so that libllama parses the grammar off the event
    loop (such a request is prepared on the worker pool) and a grammar it refuses fails the
    request before it is queued. Other chains are built by the engine at admission: building
    one makes a dozen native calls, each of which gives up the GIL, and the event loop waits to
    take it back from a busy engine thread every time (measured with no-op decodes,
    bench.python_overhead: 64 streams ran 1.8 tokens a decode when the loop built them, 12-42
    when the engine does)."""
    parse = gen.chat.parse if gen.chat is not None else None
    n, single = gen.n_choices, len(gen.prompts) * gen.n_choices == 1
    tasks: list[Task] = []
    for k in range(len(gen.prompts) * n):
        task = Task(gen.id if single else f"{gen.id}-{k}", gen.prompt_of(k),
                    _choice_params(gen.params, k % n), parsing_sink(sink_for(k), parse),
                    gen.priority)
        if gen.media:
            task.media = gen.media[k // n]
        if gen.chat is not None and gen.chat.budget is not None:
            task.budget = gen.chat.budget.state()
        if k % n:  # another choice of the same prompt: shares the first one's prompt cells
            task.copy_of = tasks[k - k % n]
        tasks.append(task)
    if not gen.params.sampling.grammar:
        return tasks
    try:
        for task in tasks:
            # The task's own parameters: each choice of n has its own seed.
            task.chain = build_task_chain(task.params, rt.model.vocab, rt.engine.eog,
                                          rt.engine.n_ctx_slot, task.prompt)
            if gen.params.sampling.grammar_lazy and gen.chat and gen.chat.lazy:
                task.lazy = gen.chat.lazy.start(
                    task.chain, rt.model.vocab, gen.params.sampling.grammar,
                    gen.chat.parse.prefix, gen.chat.parse.thinking_opened)
    except BaseException:
        for task in tasks:
            task.release_chain()
        raise
    return tasks

/* Sampling several sequences' next tokens at once, on several threads.
 *
 * llama_sampler_sample() runs a chain over the whole vocabulary (~0.6 ms for 128k tokens), so
 * a server sampling 64 sequences one after another spends more time sampling than decoding.
 * Each sequence has its own chain, candidate buffer and logits row, so the rows can be sampled
 * on separate threads with nothing shared but read-only logits. This does what
 * llama_sampler_sample() does for CPU logits (fill the candidates, apply the chain, accept the
 * selected token) without touching the llama_context from the worker threads.
 */
#include <math.h>
#include <pthread.h>
#include <string.h>

typedef struct llama_grpc_sample_item {
    struct llama_sampler * chain;
    int32_t idx;                /* the batch output to sample */
    const float * logits;       /* set here: that output's row of n_vocab floats */
    llama_token_data * cand;    /* n_vocab entries owned by the caller */
    int32_t top_k;              /* > 0: preselect (below) for a chain whose first top-k is k */
    const llama_token * keep;   /* ... and whose earlier samplers change only these tokens */
    int32_t n_keep;
    llama_token token;          /* out: the sampled token, or -1 if the chain selected none */
} llama_grpc_sample_item;

typedef struct {
    llama_grpc_sample_item * items;
    int n_items, first, step, n_vocab;
} llama_grpc_sample_job;

static void llama_grpc_heap_down(llama_token_data * h, int n, int i) {
    for (;;) {
        int least = i, l = 2 * i + 1, r = l + 1;
        if (l < n && h[l].logit < h[least].logit) least = l;
        if (r < n && h[r].logit < h[least].logit) least = r;
        if (least == i) return;
        llama_token_data t = h[i]; h[i] = h[least]; h[least] = t;
        i = least;
    }
}

/* Whether any of 16 logits from x is above thr: four 4-float compares (GCC/Clang vector
 * extensions, so SSE2 on any x86-64, NEON on arm64), where the scalar scan spends ~0.6 ns a
 * logit on a compare and a branch (80 us a token for a 128k vocabulary). */
typedef float llama_grpc_f4 __attribute__((vector_size(16)));
typedef int32_t llama_grpc_i4 __attribute__((vector_size(16)));

static int llama_grpc_any_above16(const float * x, float thr) {
    llama_grpc_f4 t = { thr, thr, thr, thr }, a, b, c, d;
    memcpy(&a, x, sizeof a);
    memcpy(&b, x + 4, sizeof b);
    memcpy(&c, x + 8, sizeof c);
    memcpy(&d, x + 12, sizeof d);
    llama_grpc_i4 m = (a > t) | (b > t) | (c > t) | (d > t);
    return (m[0] | m[1] | m[2] | m[3]) != 0;
}

static void llama_grpc_heap_offer(llama_token_data * h, int k, const float * logits, int i) {
    if (logits[i] > h[0].logit) {
        h[0].id = i; h[0].logit = logits[i];
        llama_grpc_heap_down(h, k, 0);
    }
}

/* Writes to cand the top_k + n_keep tokens with the largest raw logits, then the `keep` tokens
 * not among them; returns how many it wrote. If the chain's samplers before its first top-k
 * change only the logits of `keep`, that top-k keeps the same tokens from this set as from the
 * whole vocabulary: a token outside it has top_k + n_keep tokens above it, at least top_k of
 * them unchanged. One pass over the logits with a small min-heap, instead of filling and
 * partially sorting a candidate per vocabulary entry. */
static int llama_grpc_preselect(const llama_grpc_sample_item * it, int n_vocab) {
    const int k = it->top_k + it->n_keep;
    llama_token_data * h = it->cand;
    for (int i = 0; i < k; i++) {
        h[i].id = i; h[i].logit = it->logits[i]; h[i].p = 0.0f;
    }
    for (int i = k / 2 - 1; i >= 0; i--) llama_grpc_heap_down(h, k, i);
    /* The heap's least only rises: a block with nothing above it at the block's start changes
     * nothing, and any other block is offered in order, so the heap ends as one scalar scan
     * would leave it (a NaN is above nothing either way). */
    int i = k;
    for (; i + 16 <= n_vocab; i += 16) {
        if (llama_grpc_any_above16(it->logits + i, h[0].logit)) {
            for (int j = i; j < i + 16; j++) llama_grpc_heap_offer(h, k, it->logits, j);
        }
    }
    for (; i < n_vocab; i++) llama_grpc_heap_offer(h, k, it->logits, i);
    int n = k;
    for (int j = 0; j < it->n_keep; j++) {
        llama_token t = it->keep[j];
        int seen = 0;
        for (int i = 0; i < n && !seen; i++) seen = h[i].id == t;
        if (!seen) {
            h[n].id = t; h[n].logit = it->logits[t]; h[n].p = 0.0f;
            n++;
        }
    }
    return n;
}

static void llama_grpc_sample_one(llama_grpc_sample_item * it, int n_vocab) {
    int n = n_vocab;
    if (it->top_k > 0 && it->n_keep >= 0 && (int64_t) it->top_k + it->n_keep < n_vocab) {
        n = llama_grpc_preselect(it, n_vocab);
    } else {
        for (int i = 0; i < n_vocab; i++) {
            it->cand[i].id = i;
            it->cand[i].logit = it->logits[i];
            it->cand[i].p = 0.0f;
        }
    }
    llama_token_data_array arr = { it->cand, (size_t) n, -1, false };
    llama_sampler_apply(it->chain, &arr);
    /* A candidate the chain ruled out (-inf: the grammar or a ban) selected anyway, when it
     * ruled out every one: accepting it would make the grammar throw through the C API, which
     * ends the process (std::terminate). */
    if (arr.selected < 0 || (size_t) arr.selected >= arr.size
        || arr.data[arr.selected].logit == -INFINITY) {
        it->token = -1;
        return;
    }
    it->token = arr.data[arr.selected].id;
    llama_sampler_accept(it->chain, it->token);
}

static void * llama_grpc_sample_run(void * arg) {
    llama_grpc_sample_job * job = (llama_grpc_sample_job *) arg;
    for (int i = job->first; i < job->n_items; i += job->step) {
        llama_grpc_sample_one(&job->items[i], job->n_vocab);
    }
    return NULL;
}

/* Samples every item on up to n_threads threads, the caller's included. Returns how many
 * threads ran, or -1 - i if item i's batch output has no logits (then nothing was sampled).
 * The logits rows are looked up here, on the calling thread: the first lookup after a decode
 * waits for it and may reorder the outputs in place, so the workers see only final rows (and
 * Python does not drop and retake the GIL once per item to look them up).
 * Threads are started per call: at ~20 us each that is small against the sampling they share,
 * and no idle pool outlives a busy step. */
int llama_grpc_sample_parallel(struct llama_context * ctx, llama_grpc_sample_item * items,
                               int n_items, int n_vocab, int n_threads) {
    enum { MAX_THREADS = 64 };
    if (n_items <= 0) {
        return 0;
    }
    for (int i = 0; i < n_items; i++) {
        items[i].logits = llama_get_logits_ith(ctx, items[i].idx);
        if (items[i].logits == NULL) {
            return -1 - i;
        }
    }
    if (n_threads > n_items) n_threads = n_items;
    if (n_threads > MAX_THREADS) n_threads = MAX_THREADS;
    if (n_threads < 1) n_threads = 1;
    llama_grpc_sample_job jobs[MAX_THREADS];
    pthread_t threads[MAX_THREADS];
    for (int t = 0; t < n_threads; t++) {
        jobs[t] = (llama_grpc_sample_job) { items, n_items, t, n_threads, n_vocab };
    }
    int started = 1;  /* job 0 is the caller's */
    while (started < n_threads &&
           pthread_create(&threads[started], NULL, llama_grpc_sample_run, &jobs[started]) == 0) {
        started++;
    }
    llama_grpc_sample_run(&jobs[0]);
    for (int t = started; t < n_threads; t++) {  /* jobs no thread could be started for */
        llama_grpc_sample_run(&jobs[t]);
    }
    for (int t = 1; t < started; t++) {
        pthread_join(threads[t], NULL);
    }
    return started;
}

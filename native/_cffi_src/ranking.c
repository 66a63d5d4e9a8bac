/* The few most likely tokens of a vocabulary's worth of values, for the probabilities a
 * request asks for (n_probs): one pass with a min-heap of k entries, O(n log k), so that the
 * Python process needs no array library for it (numpy, once imported, made libllama's CPU
 * matrix kernels ~3% slower in the same process; see docs/benchmarks.md). */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>

typedef struct { float value; int32_t index; } llama_grpc_ranked;

/* Whether a ranks ahead of b: the larger value, or on a tie the lower index. */
static int llama_grpc_ahead(llama_grpc_ranked a, llama_grpc_ranked b) {
    return a.value > b.value || (a.value == b.value && a.index < b.index);
}

/* The heap's root is the entry ranked last, the first to make room for a better one. */
static void llama_grpc_rank_down(llama_grpc_ranked * h, int32_t n, int32_t i) {
    for (;;) {
        int32_t last = i, l = 2 * i + 1, r = l + 1;
        if (l < n && llama_grpc_ahead(h[last], h[l])) last = l;
        if (r < n && llama_grpc_ahead(h[last], h[r])) last = r;
        if (last == i) return;
        llama_grpc_ranked t = h[i]; h[i] = h[last]; h[last] = t;
        i = last;
    }
}

/* Writes to out the indices of the k largest of the n floats at base, base + stride, ...
 * (stride in bytes), best first, ties by lower index. Returns how many it wrote, min(k, n),
 * or -1 if it could not allocate its heap. */
static int32_t llama_grpc_top_k(const char * base, size_t stride, int32_t n, int32_t k,
                                int32_t * out) {
    if (k > n) k = n;
    if (k <= 0) return 0;
    llama_grpc_ranked * h = malloc((size_t) k * sizeof *h);
    if (h == NULL) return -1;
    for (int32_t i = 0; i < k; i++) {
        h[i].value = *(const float *) (base + (size_t) i * stride);
        h[i].index = i;
    }
    for (int32_t i = k / 2 - 1; i >= 0; i--) llama_grpc_rank_down(h, k, i);
    for (int32_t i = k; i < n; i++) {
        llama_grpc_ranked c = { *(const float *) (base + (size_t) i * stride), i };
        if (llama_grpc_ahead(c, h[0])) {
            h[0] = c;
            llama_grpc_rank_down(h, k, 0);
        }
    }
    for (int32_t m = k; m > 0; m--) {  /* take the last-ranked out, filling out from the end */
        out[m - 1] = h[0].index;
        h[0] = h[m - 1];
        llama_grpc_rank_down(h, m - 1, 0);
    }
    free(h);
    return k;
}

/* The k most likely tokens of a logits row (their ids in out_ids, best first) and the row's
 * log-sum-exp, so that a token's log-probability is its logit minus *lse. Returns the count,
 * or -1 on allocation failure. */
int32_t llama_grpc_top_logits(const float * logits, int32_t n, int32_t k, int32_t * out_ids,
                              double * lse) {
    float max = -INFINITY;
    for (int32_t i = 0; i < n; i++) if (logits[i] > max) max = logits[i];
    double sum = 0.0;
    for (int32_t i = 0; i < n; i++) sum += exp((double) logits[i] - max);
    *lse = (double) max + log(sum);
    return llama_grpc_top_k((const char *) logits, sizeof *logits, n, k, out_ids);
}

/* The id of a logits row's largest logit (ties: the lower id), -1 for an empty row: a greedy
 * pick without the log-sum-exp's exponentials over the vocabulary. */
int32_t llama_grpc_argmax(const float * logits, int32_t n) {
    int32_t best = n > 0 ? 0 : -1;
    for (int32_t i = 1; i < n; i++) if (logits[i] > logits[best]) best = i;
    return best;
}

/* Fills n candidates from a logits row: token i with its logit, p 0 (as a sampler chain
 * expects them). */
void llama_grpc_fill_candidates(llama_token_data * cand, const float * logits, int32_t n) {
    for (int32_t i = 0; i < n; i++) {
        cand[i].id = i;
        cand[i].logit = logits[i];
        cand[i].p = 0.0f;
    }
}

/* Writes to out the positions in data of the k candidates with the largest p, best first,
 * ties in their order in data. Returns the count or -1 on allocation failure. */
int32_t llama_grpc_top_by_p(const llama_token_data * data, int32_t n, int32_t k,
                            int32_t * out) {
    return llama_grpc_top_k((const char *) data + offsetof(llama_token_data, p),
                            sizeof *data, n, k, out);
}

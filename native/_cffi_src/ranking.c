/* The few most likely tokens of a vocabulary's worth of values, for the probabilities a
 * request asks for (n_probs): one pass with a min-heap of k entries, O(n log k), so that the
 * Python process needs no array library for it (numpy, once imported, made libllama's CPU
 * matrix kernels ~3% slower in the same process; see docs/benchmarks.md). */
#include <math.h>
#include <stddef.h>
#include <stdlib.h>
#include <string.h>

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

/* Four floats (GCC/Clang vector extensions: SSE2 on any x86-64, NEON on arm64). */
typedef float llama_grpc_argmax_f4 __attribute__((vector_size(16)));
typedef int32_t llama_grpc_argmax_i4 __attribute__((vector_size(16)));

static llama_grpc_argmax_f4 llama_grpc_argmax_load(const float * x) {
    llama_grpc_argmax_f4 v;
    memcpy(&v, x, sizeof v);
    return v;
}

/* m with each lane that v is above raised to v's value (a NaN is above nothing). */
static llama_grpc_argmax_f4 llama_grpc_argmax_raise(llama_grpc_argmax_f4 m,
                                                    llama_grpc_argmax_f4 v) {
    llama_grpc_argmax_i4 up = v > m;
    return (llama_grpc_argmax_f4) (((llama_grpc_argmax_i4) v & up)
                                   | ((llama_grpc_argmax_i4) m & ~up));
}

/* The id of a logits row's largest logit (ties: the lower id), -1 for an empty row: a greedy
 * pick without the log-sum-exp's exponentials over the vocabulary. Once per drafted token:
 * the plain scan's compare against the best so far, read back from memory, chained every
 * logit to the one before (~2.8 ns a logit, 0.36 ms for a 128k vocabulary); here the largest
 * value in 16 independent lanes, then its first position, 16 at a time (~0.2 ns a logit).
 * The same answer as that scan, NaNs and signed zeros included: a NaN is above nothing, so a
 * row starting with one gives 0. */
int32_t llama_grpc_argmax(const float * logits, int32_t n) {
    if (n <= 0) return -1;
    float best = logits[0];
    llama_grpc_argmax_f4 a = { best, best, best, best }, b = a, c = a, d = a;
    int32_t i = 0;
    for (; i + 16 <= n; i += 16) {
        a = llama_grpc_argmax_raise(a, llama_grpc_argmax_load(logits + i));
        b = llama_grpc_argmax_raise(b, llama_grpc_argmax_load(logits + i + 4));
        c = llama_grpc_argmax_raise(c, llama_grpc_argmax_load(logits + i + 8));
        d = llama_grpc_argmax_raise(d, llama_grpc_argmax_load(logits + i + 12));
    }
    a = llama_grpc_argmax_raise(llama_grpc_argmax_raise(a, b), llama_grpc_argmax_raise(c, d));
    for (int j = 0; j < 4; j++) if (a[j] > best) best = a[j];
    for (; i < n; i++) if (logits[i] > best) best = logits[i];
    llama_grpc_argmax_f4 t = { best, best, best, best };
    for (i = 0; i + 16 <= n; i += 16) {
        llama_grpc_argmax_i4 hit = (llama_grpc_argmax_load(logits + i) == t)
            | (llama_grpc_argmax_load(logits + i + 4) == t)
            | (llama_grpc_argmax_load(logits + i + 8) == t)
            | (llama_grpc_argmax_load(logits + i + 12) == t);
        if (hit[0] | hit[1] | hit[2] | hit[3]) break;
    }
    for (; i < n; i++) if (logits[i] == best) return i;
    return 0;  /* logits[0] is a NaN */
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

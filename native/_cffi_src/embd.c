/* An embedding's normalization with the rounding of llama-server's (common_embd_normalize):
 * float32 products and squares, the norm accumulated in a double in input order, a float32
 * scale. Here in C so that the service process needs no array library for embeddings (numpy,
 * once imported, makes libllama's CPU matrix kernels ~3% slower in the same process;
 * docs/benchmarks.md). norm: -1 none, 0 max absolute (to the int16 range), 2 Euclidean,
 * another value a p-norm. out may be inp. */
#include <math.h>

void llama_grpc_embd_normalize(const float * inp, float * out, int32_t n, int32_t norm) {
    double total = 0.0;
    if (norm == -1) {
        total = 1.0;
    } else if (norm == 0) {
        for (int32_t i = 0; i < n; i++) {
            const float a = fabsf(inp[i]);
            if (total < a) {  /* false for a NaN: skipped */
                total = a;
            }
        }
        total /= 32760.0;
    } else if (norm == 2) {
        for (int32_t i = 0; i < n; i++) {
            const float square = inp[i] * inp[i];
            total += square;
        }
        total = sqrt(total);
    } else {
        for (int32_t i = 0; i < n; i++) {
            total += pow(fabsf(inp[i]), (double) norm);
        }
        total = pow(total, 1.0 / norm);
    }
    const float scale = total > 0.0 ? (float) (1.0 / total) : 0.0f;
    for (int32_t i = 0; i < n; i++) {
        out[i] = inp[i] * scale;
    }
}

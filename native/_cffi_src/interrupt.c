/* A flag that stops a running llama_decode early: llama.cpp's CPU backend asks the context's
 * abort callback between graph nodes, and llama_decode then returns 2 with the aborted ubatch's
 * positions removed from the KV memory. The flag is written by other threads (the service's
 * event loop) while the decoding thread runs without the GIL, hence the atomics.
 *
 * 0: interrupts are not allowed (a request is ignored); 1: allowed; 2: requested. Only the
 * owner allows or disallows; a request turns 1 into 2 and nothing else, so a late one cannot
 * stop a decode that was never meant to be interruptible. */
#include <time.h>
#include <unistd.h>

static bool llama_grpc_interrupt_requested(void * flag) {
    return __atomic_load_n((const int *) flag, __ATOMIC_RELAXED) == 2;
}

void llama_grpc_watch_interrupt(struct llama_context * ctx, int * flag) {
    llama_set_abort_callback(ctx, llama_grpc_interrupt_requested, flag);
}

void llama_grpc_allow_interrupt(int * flag, int allow) {
    __atomic_store_n(flag, allow ? 1 : 0, __ATOMIC_SEQ_CST);
}

int llama_grpc_request_interrupt(int * flag) {
    int allowed = 1;
    return __atomic_compare_exchange_n(flag, &allowed, 2, false, __ATOMIC_SEQ_CST,
                                       __ATOMIC_SEQ_CST);
}

int llama_grpc_interrupt_pending(const int * flag) {
    return __atomic_load_n(flag, __ATOMIC_RELAXED) == 2;
}

/* llama_decode, after writing one byte to wake_fd when it is >= 0 (a pipe an asyncio loop
 * reads, service/engine/waker.py): the engine hands a step's events to the event loop this way
 * so that the loop takes the GIL while this thread decodes without it. Woken from Python
 * instead, the engine thread dropped the GIL for the write and waited for the loop to finish
 * with the events before it could go on (~0.35 ms a token on a busy 2-core machine). A full
 * pipe already wakes the loop, so a failed write is ignored.
 *
 * A context without memory (an encoder such as BERT: embeddings, reranking) goes straight to
 * llama_encode, which is all llama_decode does for it after logging a debug line on every call:
 * a call into Python's log callback, which takes the GIL in the middle of the decode (and waits
 * for it while the event loop holds it, e.g. turning the last step's results into responses).
 *
 * With `synchronize`, the call also waits for the backend to finish (llama_synchronize) before
 * it returns, so the GIL is taken back once, after the GPU's work, and not between a CUDA
 * decode's return (graph queued) and the wait: the event loop, woken above, then has the whole
 * GPU computation for the last step's events. An H200 step timeline of 64 streams showed the
 * engine thread waiting ~1.5 ms a step for the GIL at the decode's return. `launched`, when not
 * NULL, gets CLOCK_MONOTONIC (Python's perf_counter) and the thread's CPU clock (thread_time),
 * in seconds, when the decode call returned: the step timeline splits the two waits by them. */
int32_t llama_grpc_decode_wake(struct llama_context * ctx, struct llama_batch batch,
                               int wake_fd, int synchronize, double * launched) {
    if (wake_fd >= 0) {
        const char byte = 0;
        ssize_t ignored = write(wake_fd, &byte, 1);
        (void) ignored;
    }
    const int32_t rc = llama_get_memory(ctx) == NULL ? llama_encode(ctx, batch)
                                                      : llama_decode(ctx, batch);
    if (launched != NULL) {
        struct timespec wall, cpu;
        clock_gettime(CLOCK_MONOTONIC, &wall);
        clock_gettime(CLOCK_THREAD_CPUTIME_ID, &cpu);
        launched[0] = (double) wall.tv_sec + (double) wall.tv_nsec * 1e-9;
        launched[1] = (double) cpu.tv_sec + (double) cpu.tv_nsec * 1e-9;
    }
    if (synchronize && rc == 0) {
        llama_synchronize(ctx);
    }
    return rc;
}

/* A flag that stops a running llama_decode early: llama.cpp's CPU backend asks the context's
 * abort callback between graph nodes, and llama_decode then returns 2 with the aborted ubatch's
 * positions removed from the KV memory. The flag is written by other threads (the service's
 * event loop) while the decoding thread runs without the GIL, hence the atomics.
 *
 * 0: interrupts are not allowed (a request is ignored); 1: allowed; 2: requested. Only the
 * owner allows or disallows; a request turns 1 into 2 and nothing else, so a late one cannot
 * stop a decode that was never meant to be interruptible. */

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

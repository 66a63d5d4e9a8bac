/* A flag that stops a running llama_decode early: llama.cpp's CPU backend asks the context's
 * abort callback between graph nodes, and llama_decode then returns 2 with the aborted ubatch's
 * positions removed from the KV memory. The flag is written by other threads (the service's
 * event loop) while the decoding thread runs without the GIL, hence the atomics. */

static bool llama_grpc_interrupt_requested(void * flag) {
    return __atomic_load_n((const int *) flag, __ATOMIC_RELAXED) != 0;
}

void llama_grpc_watch_interrupt(struct llama_context * ctx, int * flag) {
    llama_set_abort_callback(ctx, llama_grpc_interrupt_requested, flag);
}

void llama_grpc_set_interrupt(int * flag, int value) {
    __atomic_store_n(flag, value, __ATOMIC_RELAXED);
}

int llama_grpc_get_interrupt(const int * flag) {
    return __atomic_load_n(flag, __ATOMIC_RELAXED);
}

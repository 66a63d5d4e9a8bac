"""Our own C helpers compiled into the extension: a flag that interrupts a running decode, and
a decode that first wakes an event loop (llama_grpc_decode_wake).

The C source is interrupt.c next to this file; like the other helpers its text is part of the
declarations' digest.
"""

from pathlib import Path

SOURCE = (Path(__file__).with_name("interrupt.c")).read_text()

TYPES = ""

FUNCTIONS = """
void llama_grpc_watch_interrupt(struct llama_context * ctx, int * flag);
void llama_grpc_allow_interrupt(int * flag, int allow);
int llama_grpc_request_interrupt(int * flag);
int llama_grpc_interrupt_pending(const int * flag);
int32_t llama_grpc_decode_wake(struct llama_context * ctx, struct llama_batch batch, int wake_fd,
                               int synchronize, double * launched);
"""

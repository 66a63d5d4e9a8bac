"""Our own C helper compiled into the extension: a flag that interrupts a running decode.

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
"""
